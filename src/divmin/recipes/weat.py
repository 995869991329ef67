"""Recipe ``weat``: standard training, PGD-AT, TRADES and WEAT on digits or Fashion-MNIST.

Data (``dataset``): ``"digits"`` (default, no download: scikit-learn's 1797 8x8 images,
split into train and test by ``split_seed``) or ``"fashion-mnist"`` (the 28x28 IDX files
of Debian's ``dataset-fashion-mnist``, read by :func:`divmin.data.fashion_mnist`; its
train and t10k splits, subsampled to ``train_size`` / ``test_size`` by ``split_seed``).
Pixels are in [0, 1]. Each method trains the same MLP with
:class:`divmin.robust.RobustTrainer` under the nested method config ``weat`` (L∞ ball of radius
``weat.attack.eps``, ``weat.attack.steps``-step attacks, ``weat.attack.beta`` for TRADES and WEAT). Reported per method
(means over ``seeds``): clean accuracy, accuracy under PGD-``weat.eval_steps`` (random start), under AutoAttack
(``autoattack_acc``, on the first ``autoattack_size`` test examples, only when the optional
``torchattacks`` package is importable, or never with ``autoattack=False``), the energy gap
mean E(x') - mean E(x) between PGD examples and natural ones, and TRADES' KL(p(x) ‖ p(x'))
at TRADES' adversary with its two energy terms (``kl_marginal`` = E(x) - E(x'),
``kl_joint``; Mirza et al. 2024). ``summary["seeds"]`` keeps every seed's figures.

Figures: ``weat.png`` shows the claim: per method, clean accuracy and robust accuracy under
PGD and under AutoAttack (mean over seeds, error bar = sd, every seed as a dot), with the
energy gap E(x') - E(x) on the test split in a panel beside it; when AutoAttack did not run
the panel says so in its title and legend. Energy traces (the paper's phases of adversarial
training): ``weat_energy.png`` plots, per
method (first seed), the training batches' mean E(x) and E(x') of the training attack
every ``trace_every`` steps (default: once an epoch) and the test split's E(x) and E(x')
under PGD every ``weat.engine.eval_every`` steps; ``summary["train_energy_gap"]`` condenses the training
gap E(x') - E(x) of each attacked method (first, min, max, last).

Generation: each trained classifier draws ``sgld_per_class`` samples per class by SGLD on
E(x, y) (:func:`divmin.robust.sgld_sample`) from class-wise starts fitted to the training
images (``sgld_init``: ``"pca"``, the paper's, or ``"gaussian"``; see
:data:`divmin.robust.SGLD_INITS`). A separately trained standard "judge" MLP (seed 1000 +
the first seed) scores them: ``sgld_acc`` is the share it labels as the class they were
drawn for, ``sgld_fd`` the Fréchet distance to the test images in its penultimate-layer
features; ``summary["init"]`` gives both for the starts themselves.
``weat_samples.png`` shows one sample per class and method (first seed).

Full-size run (``divmin recipes`` shows it): ``divmin run weat --out runs/weat --full``, that is
``--set weat.engine.max_steps=3000 --set weat.engine.eval_every=300 --set "seeds=(0, 1, 2)"``; Fashion-MNIST:
add ``--set dataset=fashion-mnist`` (10000 training and 2000 test images by default).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from ..engine import Bool, EngineConfig, Instance, Int, Number, OneOf, Tuple, validate
from ..eval import frechet_distance
from ..registry import Registry
from ..robust import WEATConfig as RobustWEATConfig  # the method's config; this module's WEATConfig is the recipe's
from ..robust import (OBJECTIVES, SGLD_INITS, AttackSettings, RobustTrainer, autoattack_accuracy, autoattack_available,
                      robustness_metrics, sgld_sample)
from ._plots import figure_legend, plt, save_figure
from ._engines import refuse_owned
from ._seeds import seed_sd
from ._registry import RecipeResult, recipe
from ._runs import resumable, run_engine, run_history

__all__ = ["WEATRecipeConfig", "run_weat"]


def _default_weat() -> RobustWEATConfig:
    # the engine's log_every is set per run from `trace_every` (default: once an epoch)
    engine = EngineConfig(max_steps=600, log_every=100, eval_every=100, progress=True, tensorboard=False,
                          max_grad_norm=None)
    return RobustWEATConfig(attack=AttackSettings(eps=0.1, steps=10, beta=6.0, divergence="forward_kl", weat_normalize=False),
                            eval_steps=20, lr=1e-3, batch_size=128, engine=engine)


@dataclasses.dataclass
class WEATRecipeConfig:
    methods: tuple[str, ...] = ("standard", "pgd-at", "trades", "weat")  # names in divmin.robust.OBJECTIVES
    seeds: tuple[int, ...] = (0,)  # model init, data order and attacks; rows average over them
    dataset: str = "digits"  # a name in DATASETS: "digits" or "fashion-mnist"
    split_seed: int = 0  # train/test split (digits) or subsample (Fashion-MNIST)
    test_fraction: float = 0.25  # share of the digits held out
    train_size: int = 10000  # Fashion-MNIST training images used (of 60000)
    test_size: int = 2000  # Fashion-MNIST test images used (of 10000)
    width: int = 256  # hidden width of the MLP (2 hidden layers)
    trace_every: int | None = None  # steps between training-energy records (None: one epoch)
    autoattack: bool = True  # run AutoAttack when torchattacks is importable (False: never)
    autoattack_size: int = 1000  # test examples AutoAttack sees (the first ones)
    sgld_init: str = "pca"  # SGLD starts: a name in divmin.robust.SGLD_INITS
    pca_components: int = 16  # principal components of the "pca" start
    sgld_per_class: int = 50  # SGLD samples per class and method
    sgld_steps: int = 100  # SGLD steps
    sgld_step_size: float = 0.01  # SGLD step alpha on E(x, y)
    sgld_noise: float = 0.01  # SGLD noise sigma
    num_threads: int | None = 1  # torch intra-op threads during the run; None = as is
    resume: bool = False  # resume every training run (judge, each method and seed) from its latest checkpoint
    # every method's training (its objective set per run from `methods`): weat.attack.eps is the L∞ radius (pixels in
    # [0, 1]) of training and evaluation attacks, weat.attack.steps the training attack's steps, weat.eval_steps the
    # evaluation PGD's, weat.engine.eval_every the steps between test-energy evaluations
    weat: RobustWEATConfig = dataclasses.field(default_factory=_default_weat)

    CHECKS = dict(  # one per field: divmin.engine.validate
        methods=Tuple(each=OneOf(OBJECTIVES), min_len=1), seeds=Tuple(each=Int(ge=0), min_len=1),
        dataset=OneOf(lambda: DATASETS.names()), split_seed=Int(ge=0), test_fraction=Number(gt=0, lt=1),
        train_size=Int(ge=10), test_size=Int(ge=10), width=Int(ge=1), trace_every=Int(ge=1, optional=True),
        autoattack=Bool(), autoattack_size=Int(ge=1), sgld_init=OneOf(SGLD_INITS), pca_components=Int(ge=1),
        sgld_per_class=Int(ge=1), sgld_steps=Int(ge=1), sgld_step_size=Number(ge=0), sgld_noise=Number(ge=0),
        num_threads=Int(ge=1, optional=True), resume=Bool(), weat=Instance(RobustWEATConfig),
    )

    def __post_init__(self) -> None:
        validate(self)
        refuse_owned(self, {"weat.objective": "methods", "weat.engine.seed": "seeds",
                            "weat.engine.log_every": "trace_every"})
        if self.weat.engine.eval_every is None:
            raise ValueError("`weat.engine.eval_every` must be set: the test energies are traced at every evaluation")


Splits = tuple[TensorDataset, TensorDataset]


def digits(test_fraction: float, seed: int) -> Splits:
    """(train, test) splits of scikit-learn's digits, pixels in [0, 1], as (x (N, 64), label) datasets."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    n_test = int(round(test_fraction * x.shape[0]))
    test, train = perm[:n_test], perm[n_test:]
    return TensorDataset(x[train], y[train]), TensorDataset(x[test], y[test])


def fashion(train_size: int, test_size: int, seed: int) -> Splits:
    """Random subsets (``seed``) of Fashion-MNIST's train and test splits, as (x (N, 784), label) datasets."""
    from ..data import fashion_mnist

    g, out = torch.Generator().manual_seed(seed), []
    for split, n in (("train", train_size), ("test", test_size)):
        x, y = fashion_mnist(split)
        pick = torch.randperm(x.shape[0], generator=g)[:n]
        out.append(TensorDataset(x[pick].flatten(1), y[pick]))
    return out[0], out[1]


# the recipe's data sets by name: config -> (train, test), flat inputs in [0, 1], 10 classes
DATASETS: Registry[Callable[[WEATRecipeConfig], Splits]] = Registry("dataset")
DATASETS.add("digits", lambda c: digits(c.test_fraction, c.split_seed))
DATASETS.add("fashion-mnist", lambda c: fashion(c.train_size, c.test_size, c.split_seed))


def _mlp(d: int, width: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10))


@recipe("weat", WEATRecipeConfig,
        "standard, PGD-AT, TRADES and WEAT on digits / Fashion-MNIST: robust accuracy and energies",
        full_size=("weat.engine.max_steps=3000", "weat.engine.eval_every=300", "seeds=(0, 1, 2)"))
def run_weat(config: WEATRecipeConfig, out_dir: Path) -> RecipeResult:
    return _run(config, out_dir)


def _train(c: WEATRecipeConfig, method: str, seed: int, train: TensorDataset, test: TensorDataset,
           out: Path) -> tuple[RobustTrainer, list[dict[str, float]]]:
    epoch = -(-len(train) // c.weat.batch_size)
    engine = run_engine(c.weat.engine, out, seed=seed, log_every=c.trace_every or epoch)
    cfg = dataclasses.replace(c.weat, objective=method, engine=engine)
    trainer = RobustTrainer(_mlp(train.tensors[0].shape[1], c.width, seed), train, eval_dataset=test, config=cfg)
    trainer.fit(resume=resumable(engine, c.resume))
    return trainer, run_history(engine)  # the whole run's records, also when it was resumed


def _judge(judge: nn.Module, x: torch.Tensor, y: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """Share of ``x`` the judge labels ``y``, and the Fréchet distance to ``reference`` in its penultimate features."""
    with torch.no_grad():
        feats, ref = judge[:-1](x), judge[:-1](reference)
        return {"sgld_acc": float((judge(x).argmax(1) == y).float().mean()), "sgld_fd": frechet_distance(feats, ref)}


def _starts(c: WEATRecipeConfig, train: TensorDataset, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Generator]:
    gen = torch.Generator().manual_seed(seed)
    draw_y = torch.arange(10).repeat_interleave(c.sgld_per_class)
    kw = {"components": c.pca_components} if c.sgld_init == "pca" else {}
    return SGLD_INITS.get(c.sgld_init)(*train.tensors, draw_y, generator=gen, **kw), draw_y, gen


_COLS = ("clean_acc", "pgd_acc", "autoattack_acc", "energy_gap", "kl", "kl_marginal", "kl_joint", "sgld_acc",
         "sgld_fd", "energy_natural", "energy_adv")


def _trace(history: list[dict[str, float]]) -> dict[str, list[list[float]]]:
    """Training (every log) and test (every evaluation) energies: rows [step, E(x), E(x') or None]."""
    def rows(nat: str, adv: str) -> list[list[float]]:
        return [[r["step"], r[nat], r.get(adv)] for r in history if nat in r]
    return {"train": rows("energy_natural", "energy_adv"), "test": rows("eval/energy_natural", "eval/energy_adv")}


def _one(c: WEATRecipeConfig, method: str, seed: int, data: Splits, judge: nn.Module, run_aa: bool,
         out: Path) -> tuple[dict[str, float], dict[str, list[list[float]]], torch.Tensor]:
    """(metrics, energy traces, one SGLD sample per class) of ``method`` trained from ``seed``."""
    train, test = data
    trainer, history = _train(c, method, seed, train, test, out)
    model = trainer.model.eval()
    final = robustness_metrics(model, *test.tensors, eps=c.weat.attack.eps, steps=c.weat.eval_steps, kl_terms=True,
                               generator=torch.Generator().manual_seed(seed))
    if run_aa:
        x_aa, y_aa = (t[:c.autoattack_size] for t in test.tensors)
        final["autoattack_acc"] = autoattack_accuracy(model, x_aa, y_aa, eps=c.weat.attack.eps, seed=seed)
    x0, draw_y, gen = _starts(c, train, seed)
    x = sgld_sample(model, x0, draw_y, step_size=c.sgld_step_size, noise=c.sgld_noise, steps=c.sgld_steps,
                    generator=gen)
    return {**final, **_judge(judge, x, draw_y, test.tensors[0])}, _trace(history), x[::c.sgld_per_class]


def _run(c: WEATRecipeConfig, out_dir: Path) -> RecipeResult:
    data = DATASETS.get(c.dataset)(c)
    run_aa = c.autoattack and autoattack_available()
    judge = _train(c, "standard", 1000 + c.seeds[0], *data, out_dir / "judge")[0].model.eval()
    rows, traces, samples, per_seed = [], {}, {}, {}
    cols = [k for k in _COLS if run_aa or k != "autoattack_acc"]
    for method in c.methods:
        runs = [_one(c, method, s, data, judge, run_aa, out_dir / method / f"seed{s}") for s in c.seeds]
        row = {"method": method, **{k: statistics.fmean(r[0][k] for r in runs) for k in cols}}
        if len(runs) > 1:  # one seed has no spread: no column rather than a 0 that reads as "no variation"
            row["pgd_acc_std"] = seed_sd([r[0]["pgd_acc"] for r in runs])
        rows.append(row)
        per_seed[method] = [{k: r[0][k] for k in cols} for r in runs]
        traces[method], samples[method] = runs[0][1], runs[0][2]
    summary = {k: {r["method"]: r[k] for r in rows} for k in cols}
    summary.update(seeds=per_seed, autoattack="run" if run_aa else
                   ("off" if not c.autoattack else "not run: torchattacks is not installed"))
    x0, draw_y, _ = _starts(c, data[0], c.seeds[0])
    summary["init"] = _judge(judge, x0, draw_y, data[1].tensors[0])
    summary.update(_claims(per_seed, run_aa))
    summary["train_energy_gap"] = {m: _gap_course(t["train"]) for m, t in traces.items()
                                   if t["train"][0][2] is not None}
    side = math.isqrt(data[0].tensors[0].shape[1])
    plots = [_robust_plot(per_seed, summary["autoattack"], c, out_dir / "weat.png"),
             _plot(traces, c.dataset, out_dir / "weat_energy.png"), _grid(samples, side, out_dir / "weat_samples.png")]
    if len(c.seeds) == 1:
        summary["pgd_acc_std"] = "not shown: one seed has no spread (set seeds=(0, 1, 2) for one)"
    cols = ["method", *cols[:2], *(["pgd_acc_std"] if len(c.seeds) > 1 else []), *cols[2:]]
    return RecipeResult(cols, rows, [str(p) for p in plots], summary)


def _gap_course(rows: list[list[float]]) -> dict[str, float]:
    """E(x') - E(x) of the training attack along training (first seed): first, smallest, largest and last."""
    gaps = [r[2] - r[1] for r in rows]
    return {"first": gaps[0], "min": min(gaps), "max": max(gaps), "last": gaps[-1]}


def _claims(per_seed: dict[str, list[dict[str, float]]], run_aa: bool) -> dict[str, bool]:
    """WEAT against TRADES on the same seeds: mean within 0.01 (matches), and better on every seed (beats)."""
    if "weat" not in per_seed or "trades" not in per_seed:
        return {}
    out = {}
    for k in ("pgd_acc", "autoattack_acc") if run_aa else ("pgd_acc",):
        w, t = [r[k] for r in per_seed["weat"]], [r[k] for r in per_seed["trades"]]
        out[f"weat_matches_trades_{k}"] = statistics.fmean(w) >= statistics.fmean(t) - 0.01
        out[f"weat_beats_trades_{k}_every_seed"] = all(a > b for a, b in zip(w, t))
    return out


_ACC_LABELS = {"clean_acc": "clean", "pgd_acc": "PGD", "autoattack_acc": "AutoAttack"}


def _robust_plot(per_seed: dict[str, list[dict[str, float]]], autoattack: str, c: WEATRecipeConfig, path: Path) -> Path:
    """Left: accuracy per method and attack (bar = mean over seeds, error bar = sd, dots = seeds).
    Right: the test energy gap E(x') - E(x) under PGD per method, drawn the same way."""
    methods = list(per_seed)
    keys = [k for k in _ACC_LABELS if k in per_seed[methods[0]][0]]
    fig, (acc_ax, gap_ax) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.8 / len(keys)
    data: dict[str, dict[str, list[float]]] = {}
    for j, key in enumerate(keys):
        xs = [i + (j - (len(keys) - 1) / 2) * width for i in range(len(methods))]
        data[key] = _bars(acc_ax, xs, [[r[key] for r in per_seed[m]] for m in methods], width, f"C{j}",
                          _ACC_LABELS[key])
    if "autoattack_acc" not in keys:  # say what is missing, in the figure itself
        acc_ax.bar([0], [0], width=0, color="none", label=f"AutoAttack {autoattack}")
    acc_ax.set_xticks(range(len(methods)), methods)
    acc_ax.set(ylim=(0, 1.32), yticks=[0, 0.2, 0.4, 0.6, 0.8, 1.0], xlabel="training objective", ylabel="test accuracy",
               title=f"accuracy under L∞ eps={c.weat.attack.eps:g} ({c.dataset}, {len(c.seeds)} seed(s))"
               + ("" if "autoattack_acc" in keys else "; AutoAttack not measured"))
    acc_ax.legend(fontsize=7, loc="upper center", ncol=len(keys) + 1)  # in the headroom above 1, not on bars
    data["energy_gap"] = _bars(gap_ax, list(range(len(methods))),
                               [[r["energy_gap"] for r in per_seed[m]] for m in methods], 0.6, "0.45",
                               "E(x') - E(x), PGD")
    gap_ax.axhline(0, color="k", lw=0.8)
    gap_ax.set_xticks(range(len(methods)), methods)
    gap_ax.set(xlabel="training objective", ylabel="energy gap E(x') - E(x)", title="test energy gap under PGD")
    gap_ax.legend(fontsize=7)
    fig.suptitle("Robust accuracy per method, with the energy gap beside it (bars: mean; error bars: sd; "
                 "dots: seeds)", fontsize=10)
    data["methods"] = methods  # type: ignore[assignment]
    return save_figure(fig, path, data=data)


def _bars(ax, xs: list[float], values: list[list[float]], width: float, color: str, label: str) -> dict:
    """Bars at ``xs`` (mean of each ``values`` list, sd as error bar) with every value as a dot."""
    means = [statistics.fmean(v) for v in values]
    sds = [seed_sd(v) for v in values]
    bars = ax.bar(xs, means, width=width, yerr=sds, capsize=3, color=color, alpha=0.8, label=label)
    ax.bar_label(bars, fmt="%.3g", fontsize=7, padding=2)  # the number itself, for reading off the figure
    for x, v in zip(xs, values):
        ax.plot([x] * len(v), v, "o", color="k", ms=2.5, zorder=3)
    return {"mean": means, "sd": sds, "seeds": values}


def _plot(traces: dict[str, dict[str, list[list[float]]]], dataset: str, path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, split, what in zip(axes, ("train", "test"), ("training batches, training attack", "test split, PGD")):
        for i, (method, trace) in enumerate(traces.items()):
            pts = trace[split]
            steps = [p[0] for p in pts]
            ax.plot(steps, [p[1] for p in pts], color=f"C{i}", marker="o", ms=3, label=f"{method}: natural E(x)")
            if pts and pts[0][2] is not None:
                ax.plot(steps, [p[2] for p in pts], color=f"C{i}", ls="--", marker="x", ms=3,
                        label=f"{method}: adversarial E(x')")
        ax.set(title=f"{what} ({dataset})", xlabel="training step", ylabel="mean energy E = -logsumexp f")
    figure_legend(fig, axes[::-1], on=axes[1], fontsize=7, ncol=2)  # the test panel holds every label
    fig.suptitle("Energies of natural and adversarial inputs during training")
    return save_figure(fig, path, data=traces)


def _grid(samples: dict[str, torch.Tensor], side: int, path: Path) -> Path:
    fig, axes = plt.subplots(len(samples), 10, figsize=(8, 0.9 * len(samples) + 0.8), squeeze=False)
    for i, (method, x) in enumerate(samples.items()):
        for k in range(10):
            ax = axes[i, k]
            ax.imshow(x[k].view(side, side).numpy(), cmap="gray_r", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if k == 0:
                ax.set_ylabel(method, fontsize=8)
            if i == len(samples) - 1:
                ax.set_xlabel(str(k), fontsize=8)
    fig.suptitle("SGLD samples on E(x, y), one per class (columns) and method (rows)")
    fig.supxlabel("class y")
    fig.supylabel("training objective")
    return save_figure(fig, path, data={m: x.view(len(x), -1).tolist() for m, x in samples.items()})
