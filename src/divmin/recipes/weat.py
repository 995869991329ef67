"""Recipe ``weat``: standard training, PGD-AT, TRADES and WEAT on scikit-learn's digits.

Data need no download: ``sklearn.datasets.load_digits`` (1797 8x8 images, pixels
scaled to [0, 1]), split into train and test by ``split_seed``. Each method trains
the same MLP with :class:`divmin.robust.RobustTrainer` (L∞ ball of radius ``eps``,
``attack_steps``-step attacks, beta for TRADES and WEAT), evaluated every
``eval_every`` steps on the test split. Reported per method: clean accuracy,
accuracy under PGD-``pgd_steps`` (random start), and the energy gap
mean E(x') - mean E(x) between PGD examples and natural ones (Mirza et al. 2024:
attacks raise the energy of a standard classifier's inputs much more than a robust
one's). The figure ``weat.png`` traces the natural and adversarial energies over
training per method (first seed).

Generation (the paper's claim that robust classifiers are better generative models):
each trained classifier draws ``sgld_per_class`` samples per class by SGLD on
E(x, y) (:func:`divmin.robust.sgld_sample`) from class-wise Gaussians fitted to the
training digits (:func:`divmin.robust.class_gaussian_init`). A separately trained
standard "judge" MLP (seed 1000 + the first seed) scores them: ``sgld_acc`` is the share it labels
as the class they were drawn for, ``sgld_fd`` the Fréchet distance to the test digits
in its hidden features; ``summary["init"]`` gives both for the Gaussian starts.
``weat_samples.png`` shows one sample per class and method (first seed).
Rows average over ``seeds``; ``pgd_acc_std`` is the spread of PGD accuracy over them. AutoAttack
(torchattacks) is not run here.

Full-size run (``divmin recipes`` shows it): ``divmin run weat --out runs/weat --full``, that is
``--set engine.max_steps=3000 --set eval_every=300 --set "seeds=(0, 1, 2)"``.
"""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from ..engine import EngineConfig, Instance, Int, IsDivergence, Number, OneOf, Tuple, validate
from ..eval import frechet_distance
from ..robust import OBJECTIVES, RobustConfig, RobustTrainer, class_gaussian_init, sgld_sample
from ._plots import plt, save_figure
from ._registry import RecipeResult, recipe, torch_threads

__all__ = ["WEATConfig", "run_weat"]


def _default_engine() -> EngineConfig:
    return EngineConfig(max_steps=600, log_every=100, progress=False, tensorboard=False, max_grad_norm=None)


@dataclasses.dataclass
class WEATConfig:
    methods: tuple[str, ...] = ("standard", "pgd-at", "trades", "weat")  # names in divmin.robust.OBJECTIVES
    seeds: tuple[int, ...] = (0,)  # model init, data order and attacks; rows average over them
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
    sgld_per_class: int = 50  # SGLD samples per class and method
    sgld_steps: int = 100  # SGLD steps
    sgld_step_size: float = 0.01  # SGLD step alpha on E(x, y)
    sgld_noise: float = 0.01  # SGLD noise sigma
    num_threads: int | None = 1  # torch intra-op threads during the run; None = as is
    engine: EngineConfig = dataclasses.field(default_factory=_default_engine)  # training loop (max_steps etc.)

    CHECKS = dict(  # one per field: divmin.engine.validate
        methods=Tuple(each=OneOf(OBJECTIVES), min_len=1), seeds=Tuple(each=Int(ge=0), min_len=1), split_seed=Int(ge=0),
        test_fraction=Number(gt=0, lt=1), width=Int(ge=1), eps=Number(ge=0), attack_steps=Int(ge=1),
        pgd_steps=Int(ge=1), beta=Number(ge=0), divergence=IsDivergence(), lr=Number(gt=0), batch_size=Int(ge=1),
        eval_every=Int(ge=1), sgld_per_class=Int(ge=1), sgld_steps=Int(ge=1), sgld_step_size=Number(ge=0),
        sgld_noise=Number(ge=0), num_threads=Int(ge=1, optional=True), engine=Instance(EngineConfig),
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
        full_size=("engine.max_steps=3000", "eval_every=300", "seeds=(0, 1, 2)"))
def run_weat(config: WEATConfig, out_dir: Path) -> RecipeResult:
    with torch_threads(config.num_threads):
        return _run(config, out_dir)


def _train(c: WEATConfig, method: str, seed: int, train: TensorDataset, test: TensorDataset,
           out: Path) -> tuple[RobustTrainer, list[dict[str, float]]]:
    engine = dataclasses.replace(c.engine, seed=seed, out_dir=str(out), eval_every=c.eval_every)
    cfg = RobustConfig(objective=method, eps=c.eps, steps=c.attack_steps, beta=c.beta, divergence=c.divergence,
                       eval_steps=c.pgd_steps, lr=c.lr, batch_size=c.batch_size, engine=engine)
    trainer = RobustTrainer(_mlp(c.width, seed), train, eval_dataset=test, config=cfg)
    return trainer, trainer.train().history


def _judge(judge: nn.Module, x: torch.Tensor, y: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """Share of ``x`` the judge labels ``y``, and the Fréchet distance to ``reference`` in its hidden features."""
    with torch.no_grad():
        feats, ref = judge[:-1](x), judge[:-1](reference)
        return {"sgld_acc": float((judge(x).argmax(1) == y).float().mean()), "sgld_fd": frechet_distance(feats, ref)}


_COLS = ("clean_acc", "pgd_acc", "energy_gap", "sgld_acc", "sgld_fd", "energy_natural", "energy_adv")


def _one(c: WEATConfig, method: str, seed: int, data: tuple[TensorDataset, TensorDataset], judge: nn.Module,
         out: Path) -> tuple[dict[str, float], list[tuple[int, float, float]], torch.Tensor]:
    """(metrics, energy trace, one SGLD sample per class) of ``method`` trained from ``seed``."""
    train, test = data
    trainer, history = _train(c, method, seed, train, test, out)
    final = trainer.evaluate(generator=torch.Generator().manual_seed(seed))
    gen = torch.Generator().manual_seed(seed)
    draw_y = torch.arange(10).repeat_interleave(c.sgld_per_class)
    x0 = class_gaussian_init(*train.tensors, draw_y, generator=gen)
    x = sgld_sample(trainer.model.eval(), x0, draw_y, step_size=c.sgld_step_size, noise=c.sgld_noise,
                    steps=c.sgld_steps, generator=gen)
    trace = [(r["step"], r["eval/energy_natural"], r["eval/energy_adv"]) for r in history if "eval/energy_natural" in r]
    return {**final, **_judge(judge, x, draw_y, test.tensors[0])}, trace, x[::c.sgld_per_class]


def _run(c: WEATConfig, out_dir: Path) -> RecipeResult:
    data = digits(c.test_fraction, c.split_seed)
    judge = _train(c, "standard", 1000 + c.seeds[0], *data, out_dir / "judge")[0].model.eval()
    rows, traces, samples = [], {}, {}
    for method in c.methods:
        runs = [_one(c, method, s, data, judge, out_dir / method / f"seed{s}") for s in c.seeds]
        row = {"method": method, **{k: statistics.fmean(r[0][k] for r in runs) for k in _COLS}}
        row["pgd_acc_std"] = statistics.stdev(r[0]["pgd_acc"] for r in runs) if len(runs) > 1 else 0.0
        rows.append(row)
        traces[method], samples[method] = runs[0][1], runs[0][2]
    cols = ["method", "clean_acc", "pgd_acc", "pgd_acc_std", "energy_gap", "sgld_acc", "sgld_fd", "energy_natural",
            "energy_adv"]
    summary = {k: {r["method"]: r[k] for r in rows} for k in _COLS[:5]}
    gen = torch.Generator().manual_seed(c.seeds[0])
    draw_y = torch.arange(10).repeat_interleave(c.sgld_per_class)
    summary["init"] = _judge(judge, class_gaussian_init(*data[0].tensors, draw_y, generator=gen), draw_y,
                             data[1].tensors[0])
    acc = summary["pgd_acc"]
    if "weat" in acc and "trades" in acc:
        summary["weat_matches_trades"] = acc["weat"] >= acc["trades"] - 0.01
    plots = [_plot(traces, out_dir / "weat.png"), _grid(samples, out_dir / "weat_samples.png")]
    return RecipeResult(cols, rows, [str(p) for p in plots], summary)


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


def _grid(samples: dict[str, torch.Tensor], path: Path) -> Path:
    fig, axes = plt.subplots(len(samples), 10, figsize=(8, 0.9 * len(samples) + 0.8), squeeze=False)
    for i, (method, x) in enumerate(samples.items()):
        for k in range(10):
            ax = axes[i, k]
            ax.imshow(x[k].view(8, 8).numpy(), cmap="gray_r", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if k == 0:
                ax.set_ylabel(method, fontsize=8)
            if i == len(samples) - 1:
                ax.set_xlabel(str(k), fontsize=8)
    fig.suptitle("SGLD samples on E(x, y), one per class (columns) and method (rows)")
    fig.supxlabel("class y")
    fig.supylabel("training objective")
    return save_figure(fig, path, data={m: x.view(len(x), -1).tolist() for m, x in samples.items()})
