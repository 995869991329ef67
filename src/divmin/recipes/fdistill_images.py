"""Recipe ``fdistill-images``: a digits diffusion teacher, distilled into one-step students.

Data: scikit-learn's 8x8 digits (1797 images, shipped with the package), scaled
to [-1, 1]. Steps, all on the shared engine:

1. a small classifier is trained on the training split; its penultimate features
   give a Fréchet distance ("FD", FID-like) and its predictions the class coverage;
2. an EDM denoiser (MLP backbone on CPU, conv backbone with ``--set backbone=conv``)
   is trained by denoising score matching: the teacher, sampled with EDM's Heun
   solver (2 x sampler_steps - 1 function evaluations);
3. for each divergence and each of ``student_seeds`` a one-step generator
   x = D(sigma_init z, sigma_init), initialised from the teacher (DMD2), is distilled with
   :class:`~divmin.diffusion.FDistillTrainer` (fake score initialised from the teacher, the
   discriminator on its trunk, real samples from the training split), every member under
   the same settings (critic warm-up and ratio clamp: see ``_default_fdistill``).

Reported: FD to the held-out split and class coverage of the held-out data, the
teacher's multi-step sampler, the one-step teacher (the generator before
distillation) and each student seed, with mean and sample-sd rows per member.
``summary["claim"]`` tests the paper's ordering (forward KL and JS ahead of reverse KL
in FD): ``holds`` on every seed, ``partly``, ``not``; ``summary["ahead_of_reverse_kl"]``
has each member's FD margin and the seeds it wins.

Full-size run (``divmin recipes`` shows it): ``divmin run fdistill-images --out runs/fdistill-images --full``, that is
``--set teacher.engine.max_steps=2000 --set classifier_steps=600 --set fdistill.engine.max_steps=300
--set score_samples=1000``.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
from pathlib import Path
from statistics import mean
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..diffusion import (
    ConvBackbone,
    DenoiserGenerator,
    DenoiserTrainingConfig,
    EDMDenoiser,
    FDistillTrainer,
    FDistillConfig,
    MLPBackbone,
    RatioHead,
    train_denoiser,
)
from ..divergences import divergence
from ..engine import (Bool, CrossEntropyTask, EngineConfig, Instance, Int, IsDivergence, Number, OneOf, Trainer, Tuple,
                      validate)
from ..eval import class_coverage, frechet_distance
from ._plots import bar_panel, plt, save_figure
from ._engines import recipe_engine
from ._seeds import seed_sd
from ._registry import RecipeResult, recipe
from ._runs import resumable, run_engine


def _engine(steps: int) -> EngineConfig:
    return recipe_engine(steps, max_grad_norm=10.0, log_every=max(steps // 4, 1))


def _default_teacher() -> DenoiserTrainingConfig:
    # sigma_max: the largest noise level of the teacher's training and of its sampler (EDM's 80)
    return DenoiserTrainingConfig(lr=1e-3, sigma_max=80.0, engine=_engine(2000))


def _default_fdistill() -> FDistillConfig:
    # Every member gets the same settings, chosen so that the ones whose weight h depends on the
    # discriminator's log r (forward KL: h = r; JS: h = r / (1 + r)) are not handicapped against reverse
    # KL (h = 1, no log r at all): 100 critic updates before the first generator step (the
    # discriminator starts from the teacher's trunk but its head is untrained, so log r is noise at
    # first), and r clamped to [0.2, 5] (the method's [0.1, 20] lets forward KL's normalised weight put
    # 200 times more on one sample than on another, i.e. a few samples per batch carry its gradient).
    return FDistillConfig(batch_size=128, critic_steps=2, critic_warmup=100, lr_generator=1e-4, lr_critic=3e-4,
                          sigma_min=0.1, sigma_max=10.0, sigma_sampling="log_uniform", ratio_clamp=(0.2, 5.0),
                          feature_source="fake_score", gan_weight=1e-3, ema_decay=0.99, eval_samples=500,
                          engine=_engine(300))


@dataclasses.dataclass
class FDistillImagesConfig:
    # one student per registry name: mode-seeking (reverse KL = DMD), mass-covering (forward KL, h = r
    # unbounded), and two with a bounded weight h (JS: sigmoid(log r); softened reverse KL: sigmoid(-log r))
    # (softened reverse KL, h = sigmoid(-log r): ``--set "divergences=(..., 'softened_reverse_kl')"``)
    divergences: tuple[str, ...] = ("reverse_kl", "forward_kl", "js")
    seed: int = 0  # seed of the data split, the classifier and the teacher
    student_seeds: tuple[int, ...] = (0, 1, 2)  # one student per (divergence, seed); mean and sd rows
    backbone: str = "mlp"  # "mlp" (CPU-sized) or "conv" (for a GPU)
    width: int = 256  # MLP hidden size, or conv channels
    depth: int = 3  # residual blocks
    sampler_steps: int = 18  # EDM Heun steps of the teacher's sampler (NFE = 2 x steps - 1)
    # the generator is D(sigma_init z, sigma_init), the teacher's denoiser at one noise level (DMD2 uses
    # sigma_max; on 8x8 digits D at 80 ignores z and a student started there collapsed to 2-3 classes)
    sigma_init: float = 5.0
    classifier_steps: int = 600  # feature classifier training steps
    test_fraction: float = 0.3  # held-out share of the digits (FD reference)
    score_samples: int = 1000  # generated samples per metric (the recipe's scoring; `fdistill.eval_samples` is the method's own evaluation)
    coverage: float = 0.5  # a class is covered when its share >= coverage x 1/10
    resume: bool = False  # resume every training run from its latest checkpoint
    # the teacher's denoising score matching (Adam lr, noise range, engine.max_steps = its training steps)
    teacher: DenoiserTrainingConfig = dataclasses.field(default_factory=_default_teacher)
    fdistill: FDistillConfig = dataclasses.field(default_factory=_default_fdistill)  # method settings

    CHECKS = dict(  # one per field: divmin.engine.validate
        divergences=Tuple(each=IsDivergence(parse=divergence, capability="score_weight")), seed=Int(ge=0),
        student_seeds=Tuple(each=Int(ge=0), min_len=1),
        backbone=OneOf(lambda: _BACKBONES), width=Int(ge=1), depth=Int(ge=1), sampler_steps=Int(ge=1),
        sigma_init=Number(gt=0),
        classifier_steps=Int(ge=1), test_fraction=Number(gt=0, lt=1), score_samples=Int(ge=1),
        coverage=Number(gt=0, le=1), resume=Bool(), teacher=Instance(DenoiserTrainingConfig),
        fdistill=Instance(FDistillConfig),
    )

    def __post_init__(self) -> None:
        validate(self)
        if len(set(self.student_seeds)) != len(self.student_seeds):
            raise ValueError(f"`student_seeds` {self.student_seeds} must not repeat a value")
        if self.sigma_init > self.teacher.sigma_max:
            raise ValueError(f"`sigma_init` ({self.sigma_init}) must be <= `teacher.sigma_max` "
                             f"({self.teacher.sigma_max})")


class _FlatMLP(nn.Module):
    """MLPBackbone on flattened images (B, 1, 8, 8)."""

    def __init__(self, width: int, depth: int) -> None:
        super().__init__()
        self.mlp, self.width = MLPBackbone(64, width, depth), width

    def forward(self, x: Tensor, c_noise: Tensor) -> tuple[Tensor, Tensor]:
        out, feat = self.mlp(x.flatten(1), c_noise)
        return out.view_as(x), feat


_BACKBONES = {"mlp": lambda c: _FlatMLP(c.width, c.depth), "conv": lambda c: ConvBackbone(1, c.width, c.depth)}


def load_digits_images(seed: int, test_fraction: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(train images (N, 1, 8, 8) in [-1, 1], train labels, test images, test labels).

    Reads scikit-learn's bundled ``digits.csv.gz`` directly (no sklearn import, no download).
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise RuntimeError("fdistill-images needs the digits data shipped with scikit-learn: pip install scikit-learn")
    table = np.loadtxt(Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz", delimiter=",")
    x = torch.tensor(table[:, :64], dtype=torch.float32).view(-1, 1, 8, 8) / 8.0 - 1.0
    y = torch.tensor(table[:, 64], dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = int(len(y) * test_fraction)
    return x[perm[n_test:]], y[perm[n_test:]], x[perm[:n_test]], y[perm[:n_test]]


class DigitClassifier(nn.Module):
    """MLP 64 -> 256 -> 64 -> 10; ``features`` are the 64-d penultimate activations."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.SiLU(), nn.Linear(256, 64), nn.SiLU())
        self.head = nn.Linear(64, 10)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


def _metrics(clf: DigitClassifier, x: Tensor, ref_features: Tensor, coverage: float) -> dict[str, Any]:
    with torch.no_grad():
        x = x.float().clamp(-1, 1).cpu()
        feats, labels = clf.features(x), clf(x).argmax(-1)
    cc = class_coverage(labels, 10, coverage=coverage)
    return {"FD": frechet_distance(feats, ref_features), "classes covered": cc.covered, "class TV": cc.tv}


def _student(c: FDistillImagesConfig, teacher: nn.Module, real: Tensor, name: str, seed: int,
             out: Path) -> FDistillTrainer:
    torch.manual_seed(seed)
    gen = DenoiserGenerator(teacher.denoiser, c.sigma_init)
    fake = copy.deepcopy(teacher.denoiser).requires_grad_(True)
    disc = RatioHead(fake.width)
    engine = run_engine(c.fdistill.engine, out / f"student-{name}-seed{seed}", seed=seed,
                        label=f"fdistill-images {name}, seed {seed}")
    cfg = dataclasses.replace(c.fdistill, divergence=name, engine=engine)
    fd = FDistillTrainer(gen, teacher, fake, config=cfg, sample_shape=(1, 8, 8), real=real, discriminator=disc)
    fd.fit(resume=resumable(engine, c.resume))
    return fd


@recipe("fdistill-images", FDistillImagesConfig, "digits diffusion teacher vs one-step f-distill students (FD, classes)",
        full_size=("teacher.engine.max_steps=2000", "classifier_steps=600", "fdistill.engine.max_steps=300",
                   "score_samples=1000"), threads=2)
def run_fdistill_images(config: FDistillImagesConfig, out_dir: Path) -> RecipeResult:
    c = config
    x_tr, y_tr, x_te, y_te = load_digits_images(c.seed, c.test_fraction)
    torch.manual_seed(c.seed)
    clf_engine = run_engine(_engine(c.classifier_steps), out_dir / "classifier", seed=c.seed)
    # light input noise (std 0.05) on each drawn batch of digits
    clf_task = CrossEntropyTask(DigitClassifier(), (x_tr, y_tr), lr=1e-3, batch_size=128, optimizer=torch.optim.Adam,
                                name="classifier", input_noise=0.05)
    clf_trainer = Trainer(clf_task, clf_engine)
    clf_trainer.fit(resume=resumable(clf_engine, c.resume))
    clf = clf_trainer.models["classifier"].cpu().eval()
    with torch.no_grad():
        ref = clf.features(x_te)
        test_acc = float((clf(x_te).argmax(-1) == y_te).float().mean())
    torch.manual_seed(c.seed)
    denoiser = EDMDenoiser(_BACKBONES[c.backbone](c), sigma_data=float(x_tr.std()))
    t_engine = run_engine(c.teacher.engine, out_dir / "teacher", seed=c.seed)
    teacher = train_denoiser(denoiser, x_tr, dataclasses.replace(c.teacher, engine=t_engine),
                             resume=resumable(t_engine, c.resume))
    teacher.sampler_steps = c.sampler_steps
    gen = torch.Generator(device=next(teacher.parameters()).device).manual_seed(c.seed + 1)
    rows = [{"sampler": "training data", "NFE": 0, **_metrics(clf, x_tr[: c.score_samples], ref, c.coverage)},
            {"sampler": "teacher (EDM Heun)", "NFE": 2 * c.sampler_steps - 1,
             **_metrics(clf, teacher.sample(c.score_samples, generator=gen), ref, c.coverage)},
            {"sampler": "teacher, one step", "NFE": 1,
             **_metrics(clf, DenoiserGenerator(teacher.denoiser, c.sigma_init)(
                 torch.randn(c.score_samples, 1, 8, 8, generator=gen, device=gen.device)).detach(), ref, c.coverage)}]
    rows = [{**r, "seed": c.seed} for r in rows]
    grids = {"teacher": teacher.sample(64, generator=gen)}
    for name in c.divergences:
        mine = []
        for seed in c.student_seeds:
            fd = _student(c, teacher, x_tr, name, seed, out_dir)
            x = fd.sample(c.score_samples, generator=torch.Generator(device=gen.device).manual_seed(1000 + seed))
            mine.append({"sampler": f"student {name}", "NFE": 1, "seed": seed, **_metrics(clf, x, ref, c.coverage)})
            grids.setdefault(name, x[:64])
        rows += mine + [{"sampler": f"student {name}", "NFE": 1, "seed": k,
                         **{m: fn([r[m] for r in mine]) for m in _METRICS}} for k, fn in (("mean", mean), ("std", seed_sd))]
    plot = _image_grids(grids, rows, out_dir / "fdistill_images.png")
    students = {r["sampler"][len("student "):]: r for r in rows if r["sampler"].startswith("student") and r["seed"] == "mean"}
    summary = {"classifier_test_accuracy": test_acc, "best_student_fd": min(students, key=lambda n: students[n]["FD"]),
               **_ordering(rows, c.student_seeds)}
    return RecipeResult(["sampler", "NFE", "seed", *_METRICS], rows, [str(plot)], summary)


_METRICS = ("FD", "classes covered", "class TV")


def _ordering(rows: list[dict], seeds: tuple[int, ...]) -> dict:
    """The paper's ordering in FD: per member, reverse KL's mean FD minus the member's (positive: the
    member is better) and the seeds (paired) on which the member's FD is lower; the claim (forward KL
    and JS ahead of reverse KL) ``holds`` on every seed, ``partly`` when one has the lower mean, else
    ``not`` (``untested`` without the three members)."""
    fd = {(r["sampler"][len("student "):], r["seed"]): r["FD"] for r in rows if r["sampler"].startswith("student")}
    names = {n for n, _ in fd}
    if "reverse_kl" not in names:
        return {}
    ahead = {n: {"fd_margin": fd["reverse_kl", "mean"] - fd[n, "mean"],
                 "seeds_lower_fd": sum(fd[n, s] < fd["reverse_kl", s] for s in seeds)} for n in sorted(names - {"reverse_kl"})}
    members = ("forward_kl", "js")
    if not set(members) <= names:
        claim = "untested"
    elif all(ahead[n]["seeds_lower_fd"] == len(seeds) for n in members):
        claim = "holds"
    elif any(ahead[n]["fd_margin"] > 0 for n in members):
        claim = "partly"
    else:
        claim = "not"
    return {"ahead_of_reverse_kl": ahead, "claim": claim, "seeds": len(seeds)}


def _tile(x: Tensor, gap: int = 2) -> Tensor:
    """(64, 1, 8, 8) images in [-1, 1] -> one (8 * (8 + gap) - gap)^2 picture, digits separated by
    ``gap`` blank (value -1, white under gray_r) pixels so that neighbours do not run together."""
    x = x.float().clamp(-1, 1).cpu().reshape(-1, 8, 8)
    n = 8
    side = n * (8 + gap) - gap
    out = torch.full((side, side), -1.0)
    for i in range(min(len(x), n * n)):
        r, col = divmod(i, n)
        out[r * (8 + gap):r * (8 + gap) + 8, col * (8 + gap):col * (8 + gap) + 8] = x[i]
    return out


def _image_grids(grids: dict[str, Tensor], rows: list[dict], path: Path) -> Path:
    """64 samples per sampler (8 x 8 grids of 8 x 8 digits; students: their first seed), then FD per
    sampler as bars (students: mean +- sd over seeds, every seed as a dot)."""
    fig, axes = plt.subplots(1, len(grids) + 1, figsize=(2.6 * len(grids) + 4.5, 4.4), squeeze=False,
                             gridspec_kw={"width_ratios": [1] * len(grids) + [1.8]})
    for ax, (name, x) in zip(axes.flat, grids.items()):
        ax.imshow(_tile(x[:64]).numpy(), cmap="gray_r", vmin=-1, vmax=1)
        ax.set(xticks=[], yticks=[], xlabel="64 samples")
        ax.set_title(name if name == "teacher" else f"{name} (first seed)", fontsize=9)
    shown = [r for r in rows if r["sampler"] != "training data" and r["seed"] not in ("std",)
             and (not r["sampler"].startswith("student") or r["seed"] == "mean")]
    key = {r["sampler"]: f"{r['sampler']} ({r['NFE']} NFE)" for r in shown}
    fd = {key[r["sampler"]]: r["FD"] for r in shown}
    sd = {key[r["sampler"]]: r["FD"] for r in rows if r["seed"] == "std"}
    seeds = {key[r["sampler"]]: [] for r in shown if r["sampler"].startswith("student")}
    for r in rows:
        if r["sampler"].startswith("student") and r["seed"] not in ("mean", "std"):
            seeds[key[r["sampler"]]].append(r["FD"])
    real = {"training data": r["FD"] for r in rows if r["sampler"] == "training data"}
    ax = axes[0, -1]
    data = bar_panel(ax, fd, errors=sd, references=real, xlabel="sampler", ylabel="FD to held-out digits",
                     label="generated samples (students: mean +- sd over seeds)")
    for j, (name, values) in enumerate(seeds.items()):
        ax.scatter([list(fd).index(name)] * len(values), values, s=10, color="k", zorder=3,
                   label="one student seed" if j == 0 else None)
    ax.legend(fontsize=7)
    ax.set_title("Frechet distance (lower is better)", fontsize=9)
    fig.suptitle("fdistill-images: the teacher's multi-step sampler vs one-step f-distill students", fontsize=10)
    return save_figure(fig, path, data={**data, "seeds": seeds}, dpi=100)
