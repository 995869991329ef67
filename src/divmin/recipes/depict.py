"""Recipe ``depict``: DEPICT deep clustering (Ghasedi Dizaji et al. 2017) against k-means, on digits.

Data need no download: scikit-learn's 8x8 digits (1797 images, 10 classes), or
Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package (``dataset=fashion-mnist``,
first ``max_samples`` training images). Methods, each over ``seeds`` (mean and std):

* ``depict-dec`` / ``depict-paper``: :class:`divmin.cluster.DepictTrainer` with the DEC
  target (p ∝ q^2 / f, the authors' code) or the paper's (p ∝ q / sqrt f), KL by default;
* ``kmeans-embedding``: the k-means clusters of the pretrained autoencoder embedding
  (DEPICT's initialisation, from the ``depict-dec`` run);
* ``kmeans-pixels``: k-means on the raw pixels.

Columns: ``acc`` (Hungarian-matched clustering accuracy), ``nmi``, ``ari`` and their
std over seeds. The claim checked (``summary["depict_beats_kmeans_pixels"]``): DEPICT
(either target) beats k-means on pixels in mean accuracy. Figure: the confusion
matrix of ``depict-dec`` at the first seed (clusters relabelled by the matching).

Full-size run (``divmin recipes`` shows it): ``divmin run depict --out runs/depict --full``, that is
``--set engine.max_steps=4000 --set pretrain_steps=1500 --set "seeds=(0, 1, 2, 3, 4)" --set "channels=(32, 64)"``.
"""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path

import numpy as np
import torch

from ..cluster import DepictConfig, DepictTrainer
from ..data import fashion_mnist, load_digits_images
from ..engine import EngineConfig, Instance, Int, IsDivergence, Number, OneOf, Tuple, validate
from ..eval import ari, clustering_accuracy, nmi
from ._plots import plt, save_figure
from ._registry import RecipeResult, recipe, torch_threads

__all__ = ["DepictRecipeConfig", "run_depict"]

_DATASETS = ("digits", "fashion-mnist")


def _default_engine() -> EngineConfig:
    return EngineConfig(max_steps=1500, log_every=100, progress=False, tensorboard=False)


@dataclasses.dataclass
class DepictRecipeConfig:
    dataset: str = "digits"  # "digits" (scikit-learn) or "fashion-mnist" (Debian's dataset-fashion-mnist)
    max_samples: int = 2000  # fashion-mnist: first this many training images
    seeds: tuple[int, ...] = (0, 1, 2)  # seeds of the network init, data order and k-means
    divergence: str = "forward_kl"  # D(P || Q) of DEPICT's clustering loss
    channels: tuple[int, ...] = (16, 32)  # encoder conv widths
    embed_dim: int = 10  # embedding size
    noise: float = 0.1  # dropout rate of DEPICT's noisy encoder path
    pretrain_steps: int = 600  # reconstruction-only steps before the k-means initialisation
    update_interval: int = 20  # steps between target updates
    tol: float = 0.001  # stop rule: fraction of changed assignments between updates
    batch_size: int = 128  # images per step
    num_threads: int | None = 1  # torch intra-op threads during the run (tiny nets: 1 is fastest); None = as is
    engine: EngineConfig = dataclasses.field(default_factory=_default_engine)  # DEPICT loop (max_steps etc.)

    CHECKS = dict(  # one per field: divmin.engine.validate
        dataset=OneOf(_DATASETS), max_samples=Int(ge=10), seeds=Tuple(each=Int(ge=0), min_len=1),
        divergence=IsDivergence(), channels=Tuple(each=Int(ge=1), min_len=1), embed_dim=Int(ge=1),
        noise=Number(ge=0, lt=1), pretrain_steps=Int(ge=0), update_interval=Int(ge=1), tol=Number(ge=0, le=1),
        batch_size=Int(ge=1), num_threads=Int(ge=1, optional=True), engine=Instance(EngineConfig),
    )

    def __post_init__(self) -> None:
        validate(self)


def _load(c: DepictRecipeConfig) -> tuple[torch.Tensor, np.ndarray]:
    if c.dataset == "digits":
        x, y = load_digits_images()
    else:
        x, y = fashion_mnist("train")
        x, y = x[:c.max_samples], y[:c.max_samples]
    return x, y.numpy()


def _scores(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    return {"acc": clustering_accuracy(y, pred), "nmi": nmi(y, pred), "ari": ari(y, pred)}


def _depict(c: DepictRecipeConfig, x: torch.Tensor, rule: str, seed: int, out: Path) -> DepictTrainer:
    engine = dataclasses.replace(c.engine, seed=seed, out_dir=str(out))
    cfg = DepictConfig(n_clusters=10, target=rule, divergence=c.divergence, channels=c.channels,
                       embed_dim=c.embed_dim, noise=c.noise, pretrain_steps=c.pretrain_steps,
                       update_interval=c.update_interval, tol=c.tol, batch_size=c.batch_size, engine=engine)
    trainer = DepictTrainer(x, config=cfg)
    trainer.train()
    return trainer


def _kmeans_pixels(x: torch.Tensor, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=10, n_init=10, random_state=seed).fit(x.flatten(1).double().numpy()).labels_


@recipe("depict", DepictRecipeConfig, "DEPICT deep clustering (both targets) vs k-means on digits",
        full_size=("engine.max_steps=4000", "pretrain_steps=1500", "seeds=(0, 1, 2, 3, 4)", "channels=(32, 64)"))
def run_depict(config: DepictRecipeConfig, out_dir: Path) -> RecipeResult:
    with torch_threads(config.num_threads):
        return _run(config, out_dir)


def _run(c: DepictRecipeConfig, out_dir: Path) -> RecipeResult:
    x, y = _load(c)
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in ("depict-dec", "depict-paper", "kmeans-embedding",
                                                               "kmeans-pixels")}
    confusion_pred = None
    for seed in c.seeds:
        for rule in ("dec", "paper"):
            tr = _depict(c, x, rule, seed, out_dir / f"depict-{rule}" / f"seed{seed}")
            pred = tr.predict().numpy()
            runs[f"depict-{rule}"].append(_scores(y, pred))
            if rule == "dec":
                runs["kmeans-embedding"].append(_scores(y, tr.kmeans_labels.numpy()))
                confusion_pred = pred if confusion_pred is None else confusion_pred
        runs["kmeans-pixels"].append(_scores(y, _kmeans_pixels(x, seed)))
    rows = []
    for method, rs in runs.items():
        row: dict[str, object] = {"method": method}
        for key in ("acc", "nmi", "ari"):
            vals = [r[key] for r in rs]
            row[key] = statistics.fmean(vals)
            row[f"{key}_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        rows.append(row)
    acc = {r["method"]: r["acc"] for r in rows}
    summary = {"acc": acc, "depict_beats_kmeans_pixels": max(acc["depict-dec"], acc["depict-paper"])
               > acc["kmeans-pixels"], "margin_over_kmeans_pixels": max(acc["depict-dec"], acc["depict-paper"])
               - acc["kmeans-pixels"]}
    plot = _confusion_plot(y, confusion_pred, out_dir / "depict_confusion.png", c.dataset)
    return RecipeResult(["method", "acc", "acc_std", "nmi", "nmi_std", "ari", "ari_std"], rows, [str(plot)], summary)


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
