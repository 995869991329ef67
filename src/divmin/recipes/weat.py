"""Recipe ``weat``: standard training, PGD-AT, TRADES and WEAT on scikit-learn's digits.

Data need no download: ``sklearn.datasets.load_digits`` (1797 8x8 images, pixels
scaled to [0, 1]), split into train and test by ``split_seed``. Each method trains
the same MLP with :class:`divmin.robust.RobustTrainer` (L∞ ball of radius ``eps``,
``attack_steps``-step attacks, beta for TRADES and WEAT), evaluated every
``eval_every`` steps on the test split. Reported per method: clean accuracy,
accuracy under PGD-``pgd_steps`` (random start), and the energy gap
mean E(x') - mean E(x) between PGD examples and natural ones (Mirza et al. 2024:
attacks raise the energy of a standard classifier's inputs much more than a robust
one's). The figure traces the natural and adversarial energies over training per
method. AutoAttack (torchattacks) is not run here.

Full-size run (``divmin recipes`` shows it): ``divmin run weat --out runs/weat --full``, that is
``--set engine.max_steps=3000 --set eval_every=300``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from ..engine import EngineConfig, Instance, Int, IsDivergence, Number, OneOf, Tuple, validate
from ..robust import OBJECTIVES, RobustConfig, RobustTrainer
from ._plots import plt, save_figure
from ._registry import RecipeResult, recipe, torch_threads

__all__ = ["WEATConfig", "run_weat"]


def _default_engine() -> EngineConfig:
    return EngineConfig(max_steps=600, log_every=100, progress=False, tensorboard=False, max_grad_norm=None)


@dataclasses.dataclass
class WEATConfig:
    methods: tuple[str, ...] = ("standard", "pgd-at", "trades", "weat")  # names in divmin.robust.OBJECTIVES
    seed: int = 0  # model init, data order and attacks
    split_seed: int = 0  # train/test split
    test_fraction: float = 0.25  # share of the digits held out
    width: int = 256  # hidden width of the MLP (2 hidden layers)
    eps: float = 0.1  # L∞ radius (pixels in [0, 1])
    attack_steps: int = 10  # training attack steps
    pgd_steps: int = 20  # evaluation PGD steps
    beta: float = 6.0  # TRADES / WEAT divergence weight
    divergence: str = "forward_kl"  # D(p(x) || p(x')) of TRADES and WEAT
    lr: float = 1e-3  # AdamW learning rate
    batch_size: int = 128  # examples per step
    eval_every: int = 100  # steps between the energy-trace evaluations
    num_threads: int | None = 1  # torch intra-op threads during the run; None = as is
    engine: EngineConfig = dataclasses.field(default_factory=_default_engine)  # training loop (max_steps etc.)

    CHECKS = dict(  # one per field: divmin.engine.validate
        methods=Tuple(each=OneOf(OBJECTIVES), min_len=1), seed=Int(ge=0), split_seed=Int(ge=0),
        test_fraction=Number(gt=0, lt=1), width=Int(ge=1), eps=Number(ge=0), attack_steps=Int(ge=1),
        pgd_steps=Int(ge=1), beta=Number(ge=0), divergence=IsDivergence(), lr=Number(gt=0), batch_size=Int(ge=1),
        eval_every=Int(ge=1), num_threads=Int(ge=1, optional=True), engine=Instance(EngineConfig),
    )

    def __post_init__(self) -> None:
        validate(self)


def digits(test_fraction: float, seed: int) -> tuple[TensorDataset, TensorDataset]:
    """(train, test) splits of scikit-learn's digits, pixels in [0, 1], as (x (N, 64), label) datasets."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    n_test = int(round(test_fraction * x.shape[0]))
    test, train = perm[:n_test], perm[n_test:]
    return TensorDataset(x[train], y[train]), TensorDataset(x[test], y[test])


def _mlp(width: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10))


@recipe("weat", WEATConfig, "standard, PGD-AT, TRADES and WEAT on digits: clean/PGD accuracy and energies",
        full_size=("engine.max_steps=3000", "eval_every=300"))
def run_weat(config: WEATConfig, out_dir: Path) -> RecipeResult:
    with torch_threads(config.num_threads):
        return _run(config, out_dir)


def _run(c: WEATConfig, out_dir: Path) -> RecipeResult:
    train, test = digits(c.test_fraction, c.split_seed)
    rows, traces = [], {}
    for method in c.methods:
        engine = dataclasses.replace(c.engine, seed=c.seed, out_dir=str(out_dir / method), eval_every=c.eval_every)
        cfg = RobustConfig(objective=method, eps=c.eps, steps=c.attack_steps, beta=c.beta, divergence=c.divergence,
                           eval_steps=c.pgd_steps, lr=c.lr, batch_size=c.batch_size, engine=engine)
        trainer = RobustTrainer(_mlp(c.width, c.seed), train, eval_dataset=test, config=cfg)
        result = trainer.train()
        final = trainer.evaluate(generator=torch.Generator().manual_seed(c.seed))
        rows.append({"method": method, **{k: final[k] for k in ("clean_acc", "pgd_acc", "energy_gap")},
                     "energy_natural": final["energy_natural"], "energy_adv": final["energy_adv"]})
        traces[method] = [(r["step"], r["eval/energy_natural"], r["eval/energy_adv"])
                          for r in result.history if "eval/energy_natural" in r]
    cols = ["method", "clean_acc", "pgd_acc", "energy_gap", "energy_natural", "energy_adv"]
    acc = {r["method"]: r["pgd_acc"] for r in rows}
    summary = {"pgd_acc": acc, "clean_acc": {r["method"]: r["clean_acc"] for r in rows},
               "energy_gap": {r["method"]: r["energy_gap"] for r in rows}}
    if "weat" in acc and "trades" in acc:
        summary["weat_matches_trades"] = acc["weat"] >= acc["trades"] - 0.01
    plot = _plot(traces, out_dir / "weat.png")
    return RecipeResult(cols, rows, [str(plot)], summary)


def _plot(traces: dict[str, list[tuple[int, float, float]]], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (method, pts) in enumerate(traces.items()):
        steps = [p[0] for p in pts]
        ax.plot(steps, [p[1] for p in pts], color=f"C{i}", marker="o", ms=3, label=f"{method}: natural E(x)")
        ax.plot(steps, [p[2] for p in pts], color=f"C{i}", ls="--", marker="x", ms=3, label=f"{method}: PGD E(x')")
    ax.set(title="Energies of natural and PGD test inputs during training (digits)", xlabel="training step",
           ylabel="mean energy E = -logsumexp f")
    ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, path, data={m: [list(p) for p in pts] for m, pts in traces.items()})
