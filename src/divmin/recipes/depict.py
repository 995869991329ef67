"""Recipe ``depict``: DEPICT deep clustering (Ghasedi Dizaji et al. 2017) against k-means and DEC, on digits.

Data need no download: scikit-learn's 8x8 digits (1797 images, 10 classes), or
Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package (``dataset=fashion-mnist``:
the 60,000 training then 10,000 test images, the first ``max_samples`` of them, all by default).
Per seed, one noisy/clean convolutional autoencoder is pretrained (``depict.pretrain_steps`` steps,
learning rate ``pretrain_lr``) and every deep
method starts from it:

* ``depict-dec`` / ``depict-paper``: :class:`divmin.cluster.DepictTrainer` (softmax head,
  reconstruction kept) with the DEC target (p ∝ q^2 / f, the authors' code) or the
  paper's (p ∝ q / sqrt f), D = ``depict.divergence`` (KL by default);
* ``dec``: DEC (Xie et al. 2016) on the same backbone: Student-t head on the k-means
  centroids, DEC target, KL, clean encoder without the decoder;
* ``kmeans-embedding``: k-means on the pretrained embedding (every deep method's initialisation);
* ``kmeans-pixels``: k-means on the raw pixels.

Each deep method runs at most ``depict.engine.max_steps`` steps (learning rate ``depict.lr``) and stops earlier by
the paper's rule (fewer than ``depict.tol`` of the assignments change between target updates).
Columns: ``acc`` (Hungarian-matched clustering accuracy), ``nmi``, ``ari``, their std
over ``seeds``, and ``acc_per_seed``. The claim checked
(``summary["depict_beats_kmeans_pixels"]``): DEPICT with its default target
(``depict-dec``) beats k-means on pixels in mean accuracy (on digits at the defaults it is a tie:
0.793 ± 0.028 against 0.793 ± 0.003 over 5 seeds, see the README); ``depict_vs_kmeans_pixels`` says
"win", "tie" (the margin is within the larger sd over seeds) or "loss"; the summary also gives the
margin of each target and on how many seeds it wins. Figures: every method's accuracy
(each seed, mean ± sd), the confusion matrix of
``depict-dec`` at the first seed (clusters relabelled by the matching) and a 2-D PCA
of its embedding before (pretrained) and after DEPICT, coloured by true class.

Full-size run: ``divmin run depict --out runs/depict --full`` (``--set full=True``) applies ``FULL_SIZES[dataset]`` to the
keys left at their defaults (digits: 3000 + 3000 steps, 5 seeds). ``--full --set dataset=fashion-mnist``
clusters all 70,000 images (train + test) with 3 seeds: 30,000 pretraining steps (55 epochs) and at
most 6,000 steps (11 epochs) per method and seed, the target refreshed every 250 steps. Its cost,
projected from CPU seconds measured on 5,000 images with one thread (pretraining 0.029 s a step of
128 images, DEPICT 0.034 s, DEC 0.009 s, a target refresh 1.7e-5 s an image, k-means on 70,000 pixel
vectors about 45 s): about 1,500 CPU seconds a seed, 76 CPU minutes in all, within 90 minutes on
2 cores (one thread used; progress lines go to stderr with the CPU seconds spent).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..cluster import DepictConfig, DepictTrainer
from ..data import fashion_mnist, load_digits_images
from ..engine import Bool, EngineConfig, Instance, Int, Number, OneOf, Tuple, apply_values, atomic_write, validate
from ..eval import ari, clustering_accuracy, nmi
from ..registry import Registry
from ._plots import plt, save_figure
from ._engines import refuse_owned
from ._seeds import seed_sd
from ._registry import RecipeResult, is_main_process, recipe
from ._runs import resumable, run_engine

__all__ = ["DepictRecipeConfig", "run_depict"]

METHODS = ("depict-dec", "depict-paper", "dec", "kmeans-embedding", "kmeans-pixels")
# method -> DepictConfig fields of its fine-tuning from the shared pretrained autoencoder
_DEEP = {"depict-dec": dict(target="dec"), "depict-paper": dict(target="paper"),
         "dec": dict(target="dec", head="student_t", reconstruction_weight=0.0)}


# dataset -> the full-size run (`--full`); it changes only the keys left at their defaults.
# Fashion-MNIST: all 70,000 images, 3 seeds, about 80 CPU minutes projected (see the module docstring).
FULL_SIZES: dict[str, dict[str, object]] = {
    "digits": {"depict.engine.max_steps": 3000, "depict.pretrain_steps": 3000, "seeds": (0, 1, 2, 3, 4)},
    "fashion-mnist": {"depict.engine.max_steps": 6000, "depict.pretrain_steps": 30000, "depict.update_interval": 250,
                      "seeds": (0, 1, 2)},
}


# dataset -> the encoder path of DEPICT's clustering loss when `depict.clustering_path` is left at its default:
# the paper's noisy path, except on Fashion-MNIST where it merged clusters (divmin.cluster._trainer's
# docstring has the numbers)
_PATHS = {"digits": "noisy", "fashion-mnist": "clean"}

# the recipe's image sets by name: config -> (images (N, 1, H, W), labels (N,))
DATASETS: Registry[Callable[[DepictRecipeConfig], tuple[torch.Tensor, torch.Tensor]]] = Registry("dataset")
DATASETS.add("digits", lambda c: load_digits_images())


@DATASETS.register("fashion-mnist")
def _fashion(c: DepictRecipeConfig) -> tuple[torch.Tensor, torch.Tensor]:
    # train + test, as the clustering literature reports Fashion-MNIST
    (xa, ya), (xb, yb) = fashion_mnist("train"), fashion_mnist("test")
    return torch.cat([xa, xb])[:c.max_samples], torch.cat([ya, yb])[:c.max_samples]


def _default_depict() -> DepictConfig:
    # embed_dim 32 gave better k-means on the pretrained embedding than 10 on seeds 10, 11; pretrain_steps are
    # the shared autoencoder's, engine.max_steps each fine-tuning's
    engine = EngineConfig(max_steps=1000, log_every=100, progress=True, tensorboard=False)
    return DepictConfig(n_clusters=10, divergence="forward_kl", channels=(16, 32), embed_dim=32, noise=0.2,
                        pretrain_steps=1500, update_interval=20, tol=0.001, lr=1e-3, batch_size=128, engine=engine)


@dataclasses.dataclass
class DepictRecipeConfig:
    dataset: str = "digits"  # "digits" (scikit-learn) or "fashion-mnist" (Debian's dataset-fashion-mnist)
    max_samples: int | None = None  # fashion-mnist: first this many of the 70,000 train + test images (None: all)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)  # seeds of the network init, data order and k-means (5: see README)
    pretrain_lr: float = 1e-3  # AdamW learning rate of the shared autoencoder pretraining (depict.lr: fine-tuning's)
    num_threads: int | None = 1  # torch intra-op threads during the run (tiny nets: 1 is fastest); None = as is
    full: bool = False  # apply FULL_SIZES[dataset] to the keys left at their defaults (`divmin run depict --full`)
    resume: bool = False  # resume every training run (pretraining, each method and seed) from its latest checkpoint
    # DEPICT's settings: the shared pretraining (depict.pretrain_steps, with pretrain_lr) and every method's
    # fine-tuning from it (depict.lr, at most depict.engine.max_steps steps; each method sets its target)
    depict: DepictConfig = dataclasses.field(default_factory=_default_depict)

    CHECKS = dict(  # one per field: divmin.engine.validate
        dataset=OneOf(DATASETS), max_samples=Int(ge=10, optional=True), seeds=Tuple(each=Int(ge=0), min_len=1),
        pretrain_lr=Number(gt=0), num_threads=Int(ge=1, optional=True), full=Bool(), resume=Bool(),
        depict=Instance(DepictConfig),
    )

    def __post_init__(self) -> None:
        validate(self)
        refuse_owned(self, {"depict.target": "the method names (METHODS)", "depict.engine.seed": "seeds"})
        if self.depict.pretrain_steps < 1:
            raise ValueError(f"`depict.pretrain_steps` must be >= 1 (the shared autoencoder), got "
                             f"{self.depict.pretrain_steps}")


def _load(c: DepictRecipeConfig) -> tuple[torch.Tensor, np.ndarray]:
    x, y = DATASETS.get(c.dataset)(c)
    return x, y.numpy()


def _at_default(c: DepictRecipeConfig, key: str) -> bool:
    value, default = c, DepictRecipeConfig()
    for part in key.split("."):
        value, default = getattr(value, part), getattr(default, part)
    return value == default


def _dataset_defaults(c: DepictRecipeConfig) -> DepictRecipeConfig:
    """``c`` with the dataset's clustering path, and with ``full`` its ``FULL_SIZES`` entry, applied to the keys
    still at their defaults."""
    items = dict(FULL_SIZES[c.dataset]) if c.full else {}
    items["depict.clustering_path"] = _PATHS[c.dataset]
    return apply_values(c, [(k, v) for k, v in items.items() if _at_default(c, k)], source="the depict recipe")


def _scores(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    return {"acc": clustering_accuracy(y, pred), "nmi": nmi(y, pred), "ari": ari(y, pred)}


def _trainer(c: DepictRecipeConfig, x: torch.Tensor, seed: int, out: Path, *, steps: int, pretrain_steps: int,
             lr: float, pretrained=None, **fields) -> DepictTrainer:
    engine = run_engine(c.depict.engine, out, seed=seed, max_steps=steps)
    cfg = dataclasses.replace(c.depict, pretrain_steps=pretrain_steps, lr=lr, engine=engine, **fields)
    trainer = DepictTrainer(x, config=cfg, pretrained=pretrained)
    trainer.fit(resume=resumable(engine, c.resume))
    return trainer


def _kmeans_pixels(x: torch.Tensor, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=10, n_init=10, random_state=seed).fit(x.flatten(1).double().numpy()).labels_


@recipe("depict", DepictRecipeConfig, "DEPICT deep clustering (both targets) vs k-means and DEC on digits",
        full_size=("full=True",))
def run_depict(config: DepictRecipeConfig, out_dir: Path) -> RecipeResult:
    return _run(_dataset_defaults(config), out_dir)


def _say(message: str) -> None:
    stamp = f"{time.strftime('%H:%M:%S')}, {time.process_time():.0f} CPU s"
    print(f"[depict {stamp}] {message}", file=sys.stderr, flush=True)


def _run(c: DepictRecipeConfig, out_dir: Path) -> RecipeResult:
    cpu0 = time.process_time()
    x, y = _load(c)
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in METHODS}
    shown: dict[str, np.ndarray] = {}
    for seed in c.seeds:
        steps = c.depict.pretrain_steps
        _say(f"seed {seed}: pretraining the autoencoder on {x.shape[0]} images ({steps} steps)")
        base = _trainer(c, x, seed, out_dir / "pretrain" / f"seed{seed}", steps=steps, pretrain_steps=steps,
                        lr=c.pretrain_lr)
        for method, fields in _DEEP.items():
            _say(f"seed {seed}: {method} (at most {c.depict.engine.max_steps} steps)")
            tr = _trainer(c, x, seed, out_dir / method / f"seed{seed}", steps=c.depict.engine.max_steps,
                          pretrain_steps=0, lr=c.depict.lr, pretrained=base.model, **fields)
            pred = tr.predict().numpy()
            runs[method].append(_scores(y, pred))
            if method == "depict-dec":
                runs["kmeans-embedding"].append(_scores(y, tr.kmeans_labels.numpy()))
                if not shown:
                    shown = {"pred": pred, "before": base.embed()[0].numpy(), "after": tr.embed()[0].numpy()}
        _say(f"seed {seed}: k-means on pixels; accuracy so far: "
             + ", ".join(f"{m} {rs[-1]['acc']:.3f}" for m, rs in runs.items() if rs))
        runs["kmeans-pixels"].append(_scores(y, _kmeans_pixels(x, seed)))
    rows = [_row(method, rs) for method, rs in runs.items()]
    plots = [_accuracy_plot(rows, out_dir / "depict_accuracy.png", c.dataset, x.shape[0]),
             _confusion_plot(y, shown["pred"], out_dir / "depict_confusion.png", c.dataset),
             _embedding_plot(y, shown["before"], shown["after"], out_dir / "depict_embedding.png", c.dataset)]
    columns = ["method", "acc", "acc_std", "nmi", "nmi_std", "ari", "ari_std", "acc_per_seed"]
    summary = {**_summary(rows, c.seeds), "images": int(x.shape[0])}
    # CPU time differs between an interrupted-and-resumed run and an uninterrupted one, whose results must be
    # equal: it goes beside results.json, not into the summary (as kd-sinkd's timing.json)
    if is_main_process():
        atomic_write(out_dir / "timing.json", json.dumps({"cpu_s": time.process_time() - cpu0}, indent=1))
    return RecipeResult(columns, rows, [str(p) for p in plots], summary)


def _row(method: str, rs: list[dict[str, float]]) -> dict[str, object]:
    row: dict[str, object] = {"method": method}
    for key in ("acc", "nmi", "ari"):
        vals = [r[key] for r in rs]
        row[key] = statistics.fmean(vals)
        row[f"{key}_std"] = seed_sd(vals)
    row["acc_per_seed"] = [round(r["acc"], 4) for r in rs]
    return row


def _summary(rows: list[dict[str, object]], seeds: tuple[int, ...]) -> dict[str, object]:
    by = {r["method"]: r for r in rows}
    pixels = by["kmeans-pixels"]
    margin = {m: by[m]["acc"] - pixels["acc"] for m in _DEEP}
    wins = {m: sum(a > b for a, b in zip(by[m]["acc_per_seed"], pixels["acc_per_seed"])) for m in _DEEP}
    spread = max(by["depict-dec"]["acc_std"], pixels["acc_std"])
    # the claim in words: a mean margin within the seeds' spread is a tie
    verdict = "win" if margin["depict-dec"] > spread else "loss" if margin["depict-dec"] < -spread else "tie"
    return {"acc": {m: r["acc"] for m, r in by.items()}, "seeds": list(seeds), "depict_vs_kmeans_pixels": verdict,
            "depict_beats_kmeans_pixels": margin["depict-dec"] > 0,
            # a margin smaller than the seeds' spread is a tie in all but name
            "depict_margin_exceeds_spread": margin["depict-dec"] > spread,
            "margin_over_kmeans_pixels": margin, "seeds_won_over_kmeans_pixels": wins,
            "depict_beats_dec": by["depict-dec"]["acc"] > by["dec"]["acc"]}


def _accuracy_plot(rows: list[dict[str, object]], path: Path, dataset: str, n: int) -> Path:
    """Accuracy of each method: one dot per seed, the mean with a bar of +- one sd over seeds."""
    fig, ax = plt.subplots(figsize=(8.5, 4.8))
    seeds = len(rows[0]["acc_per_seed"])
    for i, r in enumerate(rows):
        accs = r["acc_per_seed"]
        ax.scatter([i] * len(accs), accs, s=18, color="tab:gray", alpha=0.8, zorder=3,
                   label="one seed" if i == 0 else None)
        ax.errorbar(i + 0.15, r["acc"], yerr=r["acc_std"], fmt="D", color=plt.cm.tab10(i), capsize=4, zorder=4,
                    label=f"{r['method']}: {r['acc']:.3f} ± {r['acc_std']:.3f}")
    ax.axhline(rows[-1]["acc"], color="tab:gray", ls=":", lw=1)  # k-means on pixels, the claim's baseline
    ax.set(xticks=range(len(rows)), xticklabels=[r["method"] for r in rows], ylabel="clustering accuracy",
           xlabel="method (mean ± sd over seeds; dotted: k-means on pixels)",
           title=f"depict: accuracy on {dataset} ({n} images, {seeds} seed{'s' * (seeds > 1)})")
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, data={"acc_per_seed": {r["method"]: r["acc_per_seed"] for r in rows},
                                        "acc": {r["method"]: r["acc"] for r in rows},
                                        "acc_std": {r["method"]: r["acc_std"] for r in rows}})


def _confusion_plot(y: np.ndarray, pred: np.ndarray, path: Path, dataset: str) -> Path:
    """Counts of (true class, matched cluster); clusters relabelled by the Hungarian matching."""
    from scipy.optimize import linear_sum_assignment

    k = int(max(y.max(), pred.max())) + 1
    table = np.zeros((k, k), dtype=np.int64)
    np.add.at(table, (y, pred), 1)
    _, cols = linear_sum_assignment(table, maximize=True)
    matched = table[:, cols]
    fig, ax = plt.subplots(figsize=(6.2, 5.2))
    im = ax.imshow(matched, cmap="Blues")
    fig.colorbar(im, ax=ax, label="images")
    ax.scatter(range(k), range(k), marker="s", s=160, facecolors="none", edgecolors="tab:red",
               label="cluster matched to the class")
    ax.set(xlabel="cluster (relabelled by Hungarian matching)", ylabel="true class",
           title=f"depict: DEPICT (dec target) confusion matrix on {dataset}", xticks=range(k), yticks=range(k))
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=8)
    return save_figure(fig, path, data={"confusion": matched.tolist()})


def _embedding_plot(y: np.ndarray, before: np.ndarray, after: np.ndarray, path: Path, dataset: str) -> Path:
    """2-D PCA of the clean embedding z before (pretrained) and after DEPICT, one colour per true class."""
    from sklearn.decomposition import PCA

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.8))
    record = {}
    for ax, (name, z) in zip(axes, (("pretrained autoencoder", before), ("after DEPICT (dec target)", after))):
        pca = PCA(n_components=2).fit(z)
        xy = pca.transform(z)
        for k in np.unique(y):
            ax.scatter(xy[y == k, 0], xy[y == k, 1], s=3, color=plt.cm.tab10(int(k) % 10), label=f"class {k}")
        ax.set(title=name, xlabel="PC 1", ylabel="PC 2")
        record[name] = {"explained_variance_ratio": pca.explained_variance_ratio_.tolist(),
                        "class_means": [xy[y == k].mean(0).tolist() for k in np.unique(y)]}
    axes[1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, markerscale=3)
    fig.suptitle(f"depict: embedding of {dataset} (PCA), coloured by true class")
    return save_figure(fig, path, data=record)
