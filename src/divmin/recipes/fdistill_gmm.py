"""Recipe ``fdistill-gmm``: one-step f-distill of an exact 2-D, 8-mode Zipf mixture teacher.

Teacher: 8 Gaussian modes on a circle, neighbours ``spacing`` apart, std ``mode_std``,
weights proportional to 1/k (Zipf), with exact noised scores and samples
(:class:`~divmin.diffusion.GaussianMixtureTeacher`). Student: an MLP generator
started at N(0, init_scale^2 I) (spread over all modes). Each divergence is
distilled with :class:`~divmin.diffusion.FDistillTrainer` for every seed and every noise
range in ``sigma_maxes``, then scored on fresh samples: modes covered (share >=
coverage x true weight), TV between mode shares and weights, "quality" (share
within 3 std of a mode), k-NN precision and recall, and sliced Wasserstein
distance to teacher samples; per (sigma_max, divergence) the mean and the sample
standard deviation over seeds.

Convergence is measured, not assumed: every ``eval_every`` steps the EMA generator's
samples of one fixed set of latents are scored (quality, TV weights, modes covered,
logged as ``eval/...``); ``drift`` is the larger span of quality and TV over the
evaluations of the last quarter of training and a run is ``converged`` when it is at
most ``converge_tol`` (the mean row counts the converged seeds). Each run shows as a
progress bar labelled with its divergence, seed and sigma_max.

The paper's claim (Xu, Nie & Vahdat 2025): reverse KL (DMD) drops light modes;
forward KL and JS cover them; JS is the best overall. A prototype found the
divergences differ only with sigma_max below the mode spacing (3): the default
runs reverse KL, forward KL and JS at sigma_max = 1 (where the claim can show) beside
10 (where it should not); ``summary["sigma_max=<s>"]`` holds the computed claims of
each setting: ``claim`` is ``holds`` when forward KL and JS both have a lower TV to the
mode weights than reverse KL on every seed (seeds paired), ``partly`` when one of them
has the lower mean TV, ``not`` otherwise; ``ahead_of_reverse_kl`` gives each member's
margins (TV, modes covered) and the seeds it wins.

Files: ``fdistill_gmm.png`` (first seed's samples per divergence and sigma_max; below,
every seed's TV weights and modes covered per member with the mean +- sd),
``samples.safetensors`` (the scored samples, keyed ``"sigma<s>/<divergence>/seed<k>"``)
and ``sigma<s>/<divergence>-seed<k>/`` (engine logs).

Full-size run (``divmin recipes`` shows it): ``divmin run fdistill-gmm --out runs/fdistill-gmm --full``, that is
``--set fdistill.engine.max_steps=4000 --set "seeds=(0, 1, 2, 3)"
--set "divergences=('reverse_kl', 'forward_kl', 'js', 'squared_hellinger', 'jeffreys')"``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path
from statistics import mean

import torch
from safetensors.torch import save_file

from ..diffusion import EDMDenoiser, FDistillTrainer, FDistillConfig, GaussianMixtureTeacher, MLPBackbone, MLPGenerator
from ..divergences import divergence
from ..engine import Bool, EngineConfig, Instance, Int, IsDivergence, Number, Tuple, atomic_path, validate
from ..eval import mode_stats, precision_recall, sliced_wasserstein
from ._plots import figure_legend, plt, save_figure
from ._engines import refuse_owned
from ._seeds import seed_sd
from ._registry import RecipeResult, is_main_process, recipe
from ._runs import resumable, run_engine, run_history


def _default_fdistill() -> FDistillConfig:
    # The generator first folds its wide start onto an arc through the modes, then tears the arc into
    # clusters; at a constant lr 3e-3 with 2 critic updates per step that took ~4000 steps (forward KL
    # "quality" 0.56 at 4000). lr 1e-2 decayed by a cosine to 0 and one critic update per step (at
    # equal CPU, generator steps were worth at least as much as critic steps in our runs) get further
    # in 2000. r is clamped to [0.1, 5] (method default 20): with forward KL's weight h = r up to 20
    # one seed of three swung between mode layouts to the end. The `converged` column says which runs
    # still move in their last quarter (at sigma_max 1 with the 128-wide nets: reverse KL and JS 3 of
    # 3, forward KL 0 of 3, drift 0.055-0.062).
    engine = EngineConfig(max_steps=2000, log_every=250, eval_every=125, max_grad_norm=10.0, lr_schedule="cosine",
                          progress=True, tensorboard=False)
    # sigma_max is set per run from FDistillGMMConfig.sigma_maxes
    return FDistillConfig(batch_size=128, critic_steps=1, lr_generator=1e-2, lr_critic=3e-3, sigma_max=1.0,
                          ratio_clamp=(0.1, 5.0), ema_decay=0.99, eval_samples=1000, engine=engine)


@dataclasses.dataclass
class FDistillGMMConfig:
    divergences: tuple[str, ...] = ("reverse_kl", "forward_kl", "js")  # registry names (full size: + hellinger, jeffreys)
    seeds: tuple[int, ...] = (0, 1, 2)  # one run per (sigma_max, divergence, seed); engine seed = this
    sigma_maxes: tuple[float, ...] = (1.0, 10.0)  # largest noise level of each setting (below / above the spacing)
    modes: int = 8  # mixture components on a circle
    spacing: float = 3.0  # distance between neighbouring modes
    mode_std: float = 0.2  # standard deviation of every mode
    zipf: float = 1.0  # weights proportional to 1 / k^zipf
    init_scale: float = 3.0  # the generator starts as N(0, init_scale^2 I)
    # width of the generator, fake score and discriminator MLPs: at 64 the students stayed on a closed
    # curve through the modes (quality 0.66-0.77, 8 of 12 runs converged); 128 costs ~8% more CPU per
    # step and reaches quality 0.72-0.88, TV 0.07-0.12 at sigma_max 1 (3 seeds per member)
    hidden: int = 128
    depth: int = 2  # residual blocks of the fake score / discriminator MLPs (generator: depth + 1 layers)
    score_samples: int = 5000  # samples per metric of the table (fdistill.eval_samples: training's)
    k_std: float = 3.0  # a sample belongs to a mode within k_std of its std
    coverage: float = 0.25  # a mode is covered when its share >= coverage x its weight
    pr_k: int = 5  # k of the k-NN precision / recall
    converge_tol: float = 0.05  # converged: quality and TV weights move by <= this over the last quarter's evaluations
    resume: bool = False  # resume every training run from its latest checkpoint
    fdistill: FDistillConfig = dataclasses.field(default_factory=_default_fdistill)  # method settings (divergence overridden)

    CHECKS = dict(  # one per field: divmin.engine.validate
        divergences=Tuple(each=IsDivergence(parse=divergence, capability="score_weight"), min_len=1),
        seeds=Tuple(each=Int(ge=0), min_len=1), sigma_maxes=Tuple(each=Number(gt=0), min_len=1), modes=Int(ge=2), spacing=Number(gt=0), mode_std=Number(gt=0),
        zipf=Number(ge=0), init_scale=Number(gt=0), hidden=Int(ge=8), depth=Int(ge=1), score_samples=Int(ge=1),
        k_std=Number(gt=0), coverage=Number(gt=0, le=1), pr_k=Int(ge=1), converge_tol=Number(gt=0), resume=Bool(),
        fdistill=Instance(FDistillConfig),
    )

    def __post_init__(self) -> None:
        validate(self)
        refuse_owned(self, {"fdistill.divergence": "divergences", "fdistill.sigma_max": "sigma_maxes",
                            "fdistill.engine.seed": "seeds"})
        if len(set(self.sigma_maxes)) != len(self.sigma_maxes) or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"`sigma_maxes` {self.sigma_maxes} and `seeds` {self.seeds} must not repeat a value")
        if self.score_samples <= self.pr_k:
            raise ValueError(f"`score_samples` ({self.score_samples}) must be > `pr_k` ({self.pr_k})")


def make_teacher(c: FDistillGMMConfig) -> GaussianMixtureTeacher:
    angle = torch.arange(c.modes) * 2 * math.pi / c.modes
    radius = c.spacing / (2 * math.sin(math.pi / c.modes))
    means = torch.stack([radius * angle.cos(), radius * angle.sin()], 1)
    weights = torch.arange(1, c.modes + 1, dtype=torch.float32).pow(-c.zipf)
    return GaussianMixtureTeacher(means, c.mode_std, weights)


def _distill(c: FDistillGMMConfig, teacher: GaussianMixtureTeacher, name: str, seed: int, sigma_max: float,
             out: Path, label: str) -> tuple[FDistillTrainer, list[dict]]:
    """One training run; returns the method and its logged evaluations (every ``eval_every`` steps)."""
    torch.manual_seed(seed)
    radius = float(teacher.means.norm(dim=1).max())
    gen = MLPGenerator(2, c.hidden, c.depth + 1, init_scale=c.init_scale)
    fake = EDMDenoiser(MLPBackbone(2, c.hidden, c.depth), sigma_data=radius)
    engine = run_engine(c.fdistill.engine, out / _run_name(name, seed, sigma_max), seed=seed, label=label)
    cfg = dataclasses.replace(c.fdistill, divergence=name, sigma_max=sigma_max, engine=engine)
    fd = FDistillTrainer(gen, teacher, fake, config=cfg, sample_shape=(2,),
                 eval_metrics=functools.partial(_mode_metrics, c, teacher))
    fd.fit(resume=resumable(engine, c.resume))
    return fd, [r for r in run_history(engine) if "eval/quality" in r]


def _mode_metrics(c: FDistillGMMConfig, teacher: GaussianMixtureTeacher, x: torch.Tensor) -> dict[str, float]:
    ms = mode_stats(x, teacher.means, teacher.weights, c.mode_std, k_std=c.k_std, coverage=c.coverage)
    return {"modes_covered": ms.covered, "quality": ms.quality, "tv_weights": ms.tv}


def convergence(evals: list[dict], max_steps: int, tol: float) -> tuple[bool, float]:
    """(converged, drift) from a run's evaluations (records with ``step`` and ``eval/...``), all on the
    same latents: drift is the larger of the spans of quality and TV weights over the evaluations from
    3/4 of training on (at least two), converged when it is at most ``tol``. (The count of covered
    modes is not compared: a mode whose share sits at the coverage threshold flips it back and forth.)"""
    last = [r for r in evals if r["step"] >= 0.75 * max_steps]
    if len(last) < 2:
        return False, math.nan
    span = max(max(r[k] for r in last) - min(r[k] for r in last) for k in ("eval/quality", "eval/tv_weights"))
    return bool(span <= tol), float(span)


def _run_name(name: str, seed: int, sigma_max: float) -> str:
    return f"sigma{sigma_max:g}/{name}-seed{seed}"


def _score(c: FDistillGMMConfig, teacher: GaussianMixtureTeacher, x: torch.Tensor, seed: int) -> dict:
    gen = torch.Generator().manual_seed(10_000 + seed)
    real = teacher.sample(c.score_samples, generator=gen)
    ms = mode_stats(x, teacher.means, teacher.weights, c.mode_std, k_std=c.k_std, coverage=c.coverage)
    pr = precision_recall(x, real, k=c.pr_k)
    return {"modes covered": ms.covered, "TV weights": ms.tv, "quality": ms.quality,
            "precision": pr.precision, "recall": pr.recall,
            "SW": float(sliced_wasserstein(x, real, num_projections=256, generator=gen)),
            "lightest share": float(ms.shares[-1]), "_shares": ms.shares}


@recipe("fdistill-gmm", FDistillGMMConfig, "one-step f-distill of an 8-mode Zipf mixture: which divergence keeps light modes",
        full_size=("fdistill.engine.max_steps=4000", "seeds=(0, 1, 2, 3)",
                   "divergences=('reverse_kl', 'forward_kl', 'js', 'squared_hellinger', 'jeffreys')"))
def run_fdistill_gmm(config: FDistillGMMConfig, out_dir: Path) -> RecipeResult:
    c, teacher = config, make_teacher(config)
    rows, panels = [], {"teacher": teacher.sample(c.score_samples, generator=torch.Generator().manual_seed(0))}
    samples, summary = {}, {}  # every scored sample set, saved for re-scoring
    metrics = ["modes covered", "TV weights", "quality", "precision", "recall", "SW", "lightest share", "drift"]
    runs = [(smax, name, seed) for smax in c.sigma_maxes for name in c.divergences for seed in c.seeds]
    for smax in c.sigma_maxes:
        mine = []
        for name in c.divergences:
            for seed in c.seeds:
                i = runs.index((smax, name, seed)) + 1
                label = f"fdistill-gmm {name}, seed {seed}, sigma_max {smax:g} [{i}/{len(runs)}]"
                fd, evals = _distill(c, teacher, name, seed, smax, out_dir, label)
                x = fd.sample(c.score_samples, generator=torch.Generator().manual_seed(20_000 + seed)).cpu()
                converged, drift = convergence(evals, c.fdistill.engine.max_steps, c.converge_tol)
                mine.append({"sigma_max": smax, "divergence": name, "seed": seed, **_score(c, teacher, x, seed),
                             "drift": drift, "converged": converged})
                samples[f"sigma{smax:g}/{name}/seed{seed}"] = x.float().contiguous()
                if seed == c.seeds[0]:
                    panels[f"{name}, sigma_max {smax:g} (seed {seed}): {mine[-1]['modes covered']}/{c.modes}"] = x
        stats = [{"sigma_max": smax, "divergence": n, "seed": k,
                  **{m: fn([r[m] for r in mine if r["divergence"] == n]) for m in metrics},
                  "converged": f"{sum(r['converged'] for r in mine if r['divergence'] == n)}/{len(c.seeds)}"}
                 for n in c.divergences for k, fn in (("mean", mean), ("std", seed_sd))]
        summary[f"sigma_max={smax:g}"] = _claims([r for r in stats if r["seed"] == "mean"], mine, c.modes)
        rows += [{k: v for k, v in r.items() if not k.startswith("_")} for r in mine] + stats
    spread = {f"sigma_max {smax:g}": {m: {n: [r[m] for r in rows if (r["sigma_max"], r["divergence"]) == (smax, n)
                                             and r["seed"] not in ("mean", "std")] for n in c.divergences}
                                      for m in ("TV weights", "modes covered")} for smax in c.sigma_maxes}
    plot = _scatter_panels(panels, spread, out_dir / "fdistill_gmm.png", centres=teacher.means,
                           title="fdistill-gmm: one-step samples (first seed) and every seed's TV weights (lower: "
                                 "closer) and modes covered, per divergence and sigma_max")
    summary["weights"] = [round(float(w), 4) for w in teacher.weights]
    if is_main_process():
        with atomic_path(out_dir / "samples.safetensors") as tmp:
            save_file(samples, str(tmp))
    summary["converged"] = f"{sum(r['converged'] for r in rows if r['seed'] not in ('mean', 'std'))}/{len(runs)}"
    return RecipeResult(["sigma_max", "divergence", "seed"] + metrics + ["converged"], rows, [str(plot)], summary)


def _scatter_panels(panels: dict[str, torch.Tensor], spread: dict[str, dict[str, dict[str, list[float]]]], path: Path,
                    *, centres: torch.Tensor, title: str) -> Path:
    """One 2-D scatter per entry of ``panels`` (samples (N, 2)), mode centres marked; below them one
    panel per (setting, metric) of ``spread`` ({setting: {metric: {divergence: per-seed values}}})."""
    cols = min(4, max(len(panels), 2 * len(spread)))
    rows, extra = math.ceil(len(panels) / cols), math.ceil(2 * len(spread) / cols)
    fig, axes = plt.subplots(rows + extra, cols, figsize=(3.0 * cols, 3.0 * (rows + extra)), squeeze=False)
    lim = float(centres.abs().max()) * 1.6
    for ax, (name, x) in zip(axes.flat, panels.items()):
        ax.scatter(x[:, 0].numpy(), x[:, 1].numpy(), s=1, alpha=0.3, color="C0" if name != "teacher" else "0.4",
                   label="teacher samples" if name == "teacher" else "one-step samples")
        ax.scatter(centres[:, 0].numpy(), centres[:, 1].numpy(), s=12, marker="x", color="C3",
                   label="mode centres")
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), xticks=[], yticks=[], aspect="equal", xlabel="x1", ylabel="x2")
        ax.set_title(name, fontsize=9)
    used = len(panels)
    for ax in list(axes.flat)[used:rows * cols]:
        ax.axis("off")
    lower = list(axes.flat)[rows * cols:]
    for ax, (setting, metric, values) in zip(lower, [(k, m, v) for k, d in spread.items() for m, v in d.items()]):
        _spread_panel(ax, values, ylabel=metric, title=f"{metric}, {setting}")
    lower[0].legend(fontsize=6, loc="best")  # one legend for the spread panels: they draw alike
    for ax in lower[2 * len(spread):]:
        ax.axis("off")
    figure_legend(fig, axes[:rows], on=axes.flat[0], loc="center", fontsize=6, markerscale=2, handletextpad=0.2)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, dpi=100, data={"panels": list(panels), "spread": spread})


def _spread_panel(ax, values: dict[str, list[float]], *, ylabel: str, title: str) -> None:
    """Members side by side: every seed as a dot (jittered sideways), the mean +- sample sd as a bar."""
    for i, (name, v) in enumerate(values.items()):
        jitter = [i + 0.08 * (j - (len(v) - 1) / 2) for j in range(len(v))]
        ax.scatter(jitter, v, s=14, color=f"C{i}", alpha=0.7, label="one seed" if i == 0 else None, zorder=3)
        ax.errorbar([i + 0.3], [mean(v)], yerr=[seed_sd(v)], fmt="s", color="k", ms=4, capsize=3,
                    label="mean +- sd over seeds" if i == 0 else None)
    ax.set_xticks(range(len(values)), list(values), fontsize=7)
    ax.set_xlim(-0.5, len(values) - 0.2)
    ax.set_xlabel("divergence", fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=8)


def _claims(means: list[dict], runs: list[dict], modes: int) -> dict:
    """The paper's claims at one sigma_max, read off the per-divergence means and the per-seed runs."""
    by = {r["divergence"]: r for r in means}
    seeds = sorted({r["seed"] for r in runs})
    per = {(r["divergence"], r["seed"]): r for r in runs}
    out: dict = {"mean_modes_covered": {n: r["modes covered"] for n, r in by.items()},
                 "best_tv": min(by, key=lambda n: by[n]["TV weights"]),
                 "best_sw": min(by, key=lambda n: by[n]["SW"]), "seeds": len(seeds)}
    if {"reverse_kl", "forward_kl"} <= set(by):
        out["forward_kl_covers_more_modes"] = by["forward_kl"]["modes covered"] > by["reverse_kl"]["modes covered"]
        out["seeds_forward_kl_covers_more"] = sum(per["forward_kl", s]["modes covered"]
                                                  > per["reverse_kl", s]["modes covered"] for s in seeds)
    if "reverse_kl" in by and len(by) > 1:
        out.update(_ordering(by, per, seeds))
    return out


def _ordering(by: dict[str, dict], per: dict[tuple, dict], seeds: list) -> dict:
    """The paper's ordering, every member against reverse KL (DMD): the margin of the means in TV to
    the mode weights (positive: the member is closer) and in modes covered, and on how many seeds the
    member's TV is lower (seeds paired). The claim (forward KL and JS ahead of reverse KL) ``holds``
    when each of the two has the lower TV on every seed, is ``partly`` there when one of them has the
    lower mean TV, ``not`` otherwise (or ``untested`` without both members)."""
    rkl = by["reverse_kl"]
    ahead = {n: {"tv_margin": rkl["TV weights"] - r["TV weights"],
                 "modes_margin": r["modes covered"] - rkl["modes covered"],
                 "seeds_lower_tv": sum(per[n, s]["TV weights"] < per["reverse_kl", s]["TV weights"] for s in seeds)}
             for n, r in by.items() if n != "reverse_kl"}
    members = ("forward_kl", "js")
    if not set(members) <= set(ahead):
        claim = "untested"
    elif all(ahead[n]["seeds_lower_tv"] == len(seeds) for n in members):
        claim = "holds"
    elif any(ahead[n]["tv_margin"] > 0 for n in members):
        claim = "partly"
    else:
        claim = "not"
    return {"ahead_of_reverse_kl": ahead, "claim": claim}
