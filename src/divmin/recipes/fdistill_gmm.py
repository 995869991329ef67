"""Recipe ``fdistill-gmm``: one-step f-distill of an exact 2-D, 8-mode Zipf mixture teacher.

Teacher: 8 Gaussian modes on a circle, neighbours ``spacing`` apart, std ``mode_std``,
weights proportional to 1/k (Zipf), with exact noised scores and samples
(:class:`~divmin.diffusion.GaussianMixtureTeacher`). Student: an MLP generator
started at N(0, init_scale^2 I) (spread over all modes). Each divergence is
distilled with :class:`~divmin.diffusion.FDistill` for every seed, then scored on
fresh samples: modes covered (share >= coverage x true weight), TV between mode
shares and weights, "quality" (share within 3 std of a mode), k-NN precision and
recall, and sliced Wasserstein distance to teacher samples.

The paper's claim (Xu, Nie & Vahdat 2025): reverse KL (DMD) drops light modes;
forward KL and JS cover them; JS is the best overall. With sigma_max below the
mode spacing the divergences differ; with a large sigma_max they behave alike.

Files: ``fdistill_gmm.png`` (samples per divergence), ``samples.safetensors`` (the
scored samples, keyed ``"<divergence>/seed<k>"``) and ``<divergence>-seed<k>/`` (engine logs).

Full-size run (``divmin recipes`` shows it): ``divmin run fdistill-gmm --out runs/fdistill-gmm --full``, that is
``--set fdistill.engine.max_steps=4000 --set fdistill.critic_steps=4 --set "seeds=(0, 1, 2, 3)"``.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from statistics import mean

import torch
from safetensors.torch import save_file

from ..diffusion import EDMDenoiser, FDistill, FDistillConfig, GaussianMixtureTeacher, MLPBackbone, MLPGenerator
from ..divergences import divergence
from ..engine import Bool, EngineConfig, Instance, Int, IsDivergence, Number, Tuple, validate
from ..eval import mode_stats, precision_recall, sliced_wasserstein
from ._plots import figure_legend, plt, save_figure
from ._registry import RecipeResult, is_main_process, recipe
from ._runs import resumable, run_engine


def _default_fdistill() -> FDistillConfig:
    engine = EngineConfig(max_steps=1000, log_every=250, eval_every=500, max_grad_norm=10.0,
                          progress=False, tensorboard=False)
    return FDistillConfig(batch_size=128, critic_steps=2, lr_generator=1e-3, lr_critic=2e-3, sigma_max=1.0,
                          ema_decay=0.99, eval_samples=1000, engine=engine)


@dataclasses.dataclass
class FDistillGMMConfig:
    divergences: tuple[str, ...] = ("reverse_kl", "forward_kl", "js", "squared_hellinger", "jeffreys")  # registry names
    seeds: tuple[int, ...] = (0, 1)  # one run per (divergence, seed); engine seed = this
    modes: int = 8  # mixture components on a circle
    spacing: float = 3.0  # distance between neighbouring modes
    mode_std: float = 0.2  # standard deviation of every mode
    zipf: float = 1.0  # weights proportional to 1 / k^zipf
    init_scale: float = 3.0  # the generator starts as N(0, init_scale^2 I)
    hidden: int = 64  # width of the generator, fake score and discriminator MLPs
    depth: int = 2  # residual blocks of the fake score / discriminator MLPs (generator: depth + 1 layers)
    eval_samples: int = 5000  # samples per metric
    k_std: float = 3.0  # a sample belongs to a mode within k_std of its std
    coverage: float = 0.25  # a mode is covered when its share >= coverage x its weight
    pr_k: int = 5  # k of the k-NN precision / recall
    resume: bool = False  # resume every training run from its latest checkpoint
    fdistill: FDistillConfig = dataclasses.field(default_factory=_default_fdistill)  # method settings (divergence overridden)

    CHECKS = dict(  # one per field: divmin.engine.validate
        divergences=Tuple(each=IsDivergence(parse=divergence, capability="score_weight"), min_len=1),
        seeds=Tuple(each=Int(ge=0), min_len=1), modes=Int(ge=2), spacing=Number(gt=0), mode_std=Number(gt=0),
        zipf=Number(ge=0), init_scale=Number(gt=0), hidden=Int(ge=8), depth=Int(ge=1), eval_samples=Int(ge=1),
        k_std=Number(gt=0), coverage=Number(gt=0, le=1), pr_k=Int(ge=1), resume=Bool(),
        fdistill=Instance(FDistillConfig),
    )

    def __post_init__(self) -> None:
        validate(self)
        if self.eval_samples <= self.pr_k:
            raise ValueError(f"`eval_samples` ({self.eval_samples}) must be > `pr_k` ({self.pr_k})")


def make_teacher(c: FDistillGMMConfig) -> GaussianMixtureTeacher:
    angle = torch.arange(c.modes) * 2 * math.pi / c.modes
    radius = c.spacing / (2 * math.sin(math.pi / c.modes))
    means = torch.stack([radius * angle.cos(), radius * angle.sin()], 1)
    weights = torch.arange(1, c.modes + 1, dtype=torch.float32).pow(-c.zipf)
    return GaussianMixtureTeacher(means, c.mode_std, weights)


def _distill(c: FDistillGMMConfig, teacher: GaussianMixtureTeacher, name: str, seed: int, out: Path) -> FDistill:
    torch.manual_seed(seed)
    radius = float(teacher.means.norm(dim=1).max())
    gen = MLPGenerator(2, c.hidden, c.depth + 1, init_scale=c.init_scale)
    fake = EDMDenoiser(MLPBackbone(2, c.hidden, c.depth), sigma_data=radius)
    engine = run_engine(c.fdistill.engine, out / f"{name}-seed{seed}", seed=seed)
    cfg = dataclasses.replace(c.fdistill, divergence=name, engine=engine)
    fd = FDistill(gen, teacher, fake, cfg, sample_shape=(2,))
    fd.train(resume=resumable(engine, c.resume))
    return fd


def _score(c: FDistillGMMConfig, teacher: GaussianMixtureTeacher, x: torch.Tensor, seed: int) -> dict:
    gen = torch.Generator().manual_seed(10_000 + seed)
    real = teacher.sample(c.eval_samples, generator=gen)
    ms = mode_stats(x, teacher.means, teacher.weights, c.mode_std, k_std=c.k_std, coverage=c.coverage)
    pr = precision_recall(x, real, k=c.pr_k)
    return {"modes covered": ms.covered, "TV weights": ms.tv, "quality": ms.quality,
            "precision": pr.precision, "recall": pr.recall,
            "SW": float(sliced_wasserstein(x, real, num_projections=256, generator=gen)),
            "lightest share": float(ms.shares[-1]), "_shares": ms.shares}


@recipe("fdistill-gmm", FDistillGMMConfig, "one-step f-distill of an 8-mode Zipf mixture: which divergence keeps light modes",
        full_size=("fdistill.engine.max_steps=4000", "fdistill.critic_steps=4", "seeds=(0, 1, 2, 3)"))
def run_fdistill_gmm(config: FDistillGMMConfig, out_dir: Path) -> RecipeResult:
    c, teacher = config, make_teacher(config)
    rows, panels = [], {"teacher": teacher.sample(c.eval_samples, generator=torch.Generator().manual_seed(0))}
    samples = {}  # every scored sample set, saved for re-scoring
    for name in c.divergences:
        for seed in c.seeds:
            fd = _distill(c, teacher, name, seed, out_dir)
            x = fd.sample(c.eval_samples, generator=torch.Generator().manual_seed(20_000 + seed)).cpu()
            rows.append({"divergence": name, "seed": seed, **_score(c, teacher, x, seed)})
            samples[f"{name}/seed{seed}"] = x.float().contiguous()
            if seed == c.seeds[0]:
                panels[f"{name} (seed {seed}): {rows[-1]['modes covered']}/{c.modes} modes"] = x
    metrics = ["modes covered", "TV weights", "quality", "precision", "recall", "SW", "lightest share"]
    means = [{"divergence": n, "seed": "mean", **{m: mean(r[m] for r in rows if r["divergence"] == n) for m in metrics}}
             for n in c.divergences]
    plot = _scatter_panels(panels, out_dir / "fdistill_gmm.png", centres=teacher.means,
                          title=f"fdistill-gmm: one-step samples, sigma_max={c.fdistill.sigma_max}")
    summary = _claims(means, c.modes)
    summary["weights"] = [round(float(w), 4) for w in teacher.weights]
    if is_main_process():
        save_file(samples, str(out_dir / "samples.safetensors"))
    table = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows] + means
    return RecipeResult(["divergence", "seed"] + metrics, table, [str(plot)], summary)


def _scatter_panels(panels: dict[str, torch.Tensor], path: Path, *, centres: torch.Tensor, title: str) -> Path:
    """One 2-D scatter per entry (samples (N, 2)), mode centres marked."""
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 3.0 * rows), squeeze=False)
    lim = float(centres.abs().max()) * 1.6
    for ax, (name, x) in zip(axes.flat, panels.items()):
        ax.scatter(x[:, 0].numpy(), x[:, 1].numpy(), s=1, alpha=0.3, color="C0" if name != "teacher" else "0.4",
                   label="teacher samples" if name == "teacher" else "one-step samples")
        ax.scatter(centres[:, 0].numpy(), centres[:, 1].numpy(), s=12, marker="x", color="C3",
                   label="mode centres")
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), xticks=[], yticks=[], aspect="equal")
        ax.set_title(name, fontsize=9)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.supxlabel("x1", fontsize=9)
    fig.supylabel("x2", fontsize=9)
    figure_legend(fig, axes, on=axes.flat[0], loc="center", fontsize=6, markerscale=2, handletextpad=0.2)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, dpi=100, data={"panels": list(panels)})


def _claims(means: list[dict], modes: int) -> dict:
    """The paper's claims, read off the per-divergence means (None when a divergence was not run)."""
    by = {r["divergence"]: r for r in means}
    out: dict = {"mean_modes_covered": {n: r["modes covered"] for n, r in by.items()},
                 "best_tv": min(by, key=lambda n: by[n]["TV weights"]),
                 "best_sw": min(by, key=lambda n: by[n]["SW"])}
    if {"reverse_kl", "forward_kl", "js"} <= set(by):
        rkl, fkl, js = by["reverse_kl"], by["forward_kl"], by["js"]
        out["reverse_kl_drops_light_modes"] = rkl["modes covered"] < min(fkl["modes covered"], js["modes covered"])
        out["forward_kl_and_js_cover_all"] = fkl["modes covered"] == modes and js["modes covered"] == modes
        out["js_best_tv"] = out["best_tv"] == "js"
    return out
