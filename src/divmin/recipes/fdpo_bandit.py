"""Recipe ``fdpo-bandit``: f-DPO on a tabular bandit with an exact answer to compare against.

One prompt, K responses. A reference policy ``pi_ref`` (softmax of Gaussian
logits) and a hidden true reward R (Gaussian) are drawn from ``seed``;
preferences follow Bradley-Terry, ``Pr(y_i > y_j) = sigmoid(R_i - R_j)``. For
every (divergence, beta) a tabular policy (one logits vector, started at
``log pi_ref``) is trained through the engine on freshly sampled minibatches of
labelled pairs, minimising :func:`divmin.align.fdpo_loss` (finite data, no
population loss in training). Pairs are drawn as i, j ~ pi_ref independently, keeping
i != j; the label is drawn from the Bradley-Terry probability.

The trained policy is compared with the closed-form optimum of
``max_pi E_pi[R] - beta D_f(pi_ref || pi)`` (:func:`divmin.align._bandit.fdpo_optimum`,
``pi_y = pi_ref_y / g^{-1}((R_y - lambda)/beta)``), and both are summarised by
expected true reward, entropy, KL(pi || pi_ref), the calibration (ECE) of the
implied preferences and the total variation between them.

Training. Every policy takes damped natural-gradient steps on its logits
(``optimizer="natural"``, :class:`NaturalGradient`): ``theta -= lr F^{-1} grad`` with F
the f-DPO pair Fisher of the step's pairs (:func:`divmin.align.pair_fisher`), then the
iterates of the last half are averaged. Why: f-DPO's loss sees the policy only through
the implicit reward ``u = beta g(pi_ref / pi)``, and for members whose g is bounded as
``r -> 0`` (forward KL, alpha, Hellinger, JS) u barely moves with the logit of a
response the policy already favours far above pi_ref. Adam on the logits
(``optimizer="adam"``, the previous trainer) therefore stalls on nearly flat stretches:
at seed 0 only 10 of 28 policies came within TV 0.05 of their optimum (forward KL at
beta 0.05 stopped at TV 0.82 with a population-loss gap of 2e-3 nats), although the
data suffice by far (column "pairs needed": the Cramer-Rao number of pairs an efficient
estimator needs for an expected TV at the tolerance, :func:`divmin.align.optimum_sample_size`).
F rescales each direction by the member's own curvature, so one step size serves all.
Under ``torchrun`` the step's batch is drawn once (by process 0, the one-process stream)
and split over the processes; each process's gradient and Fisher are its share of the
whole batch's, summed over processes, so every process takes the one-process step and the
table equals the one-process table (``batch_pairs`` is the batch of the whole job).

What a default run shows (K = 64, seed 0): every member reaches its optimum at every
beta (TV < 0.05, population-loss gap ~1e-4 nats). At the exact optimum JS, not reverse
KL, is the greediest member at every beta and Jeffreys keeps the most entropy. Other
draws of the bandit are harder (seed 1: the best response has pi_ref = 0.001 and a
close runner-up; 6 of 28 reach): there the summary's ``not_reached`` names each member
that misses, with the measured reason: "statistical" when the run saw fewer pairs than
"pairs needed", "optimisation" when it saw enough but the population loss is flat
between the trained policy and the optimum (its gap, ~1e-4 nats at TV up to 0.95, is
given; the exact-loss natural gradient crawls there too, so more data would not help).
Note that "loss gap" also counts responses that neither policy gives mass to (pairs are
drawn from pi_ref), so it stays ~1e-4 even at TV ~ 0.

Divergences are given as registry names; a one-parameter member takes its
parameter after a colon: ``"alpha:0.3"`` is ``divergence("alpha", alpha=0.3)``.

Full-size run (``divmin recipes`` shows it): ``divmin run fdpo-bandit --out runs/fdpo-bandit --full``, that is
``--set responses=64 --set batch_pairs=4096 --set engine.max_steps=600``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate.utils import broadcast
from torch import nn

from ..align import (bandit_metrics, fdpo_loss, fdpo_optimum, optimum_sample_size, pair_fisher,
                     population_fdpo_loss)
from ..divergences import divergence
from ..engine import Bool, EngineConfig, Instance, Int, IsDivergence, Number, OneOf, StepOutput, Tuple, validate
from ._plots import plt, save_figure  # headless (Agg) matplotlib
from ._engines import fit_task, unclipped_engine
from ._registry import RecipeResult, recipe

__all__ = ["FDPOBanditConfig", "FDPOBanditTask", "NaturalGradient", "make_bandit", "reward_vs_kl_plot",
           "run_fdpo_bandit"]

F64 = torch.float64


@dataclasses.dataclass
class FDPOBanditConfig:
    responses: int = 64  # K, the number of responses of the single prompt
    seed: int = 0  # draws pi_ref and the true reward (the engine's seed drives the pair sampling)
    ref_scale: float = 1.0  # pi_ref = softmax(ref_scale * N(0, I)) over the K responses
    reward_scale: float = 1.0  # true reward R = reward_scale * N(0, I); BT preferences sigmoid(R_i - R_j)
    divergences: tuple[str, ...] = ("reverse_kl", "forward_kl", "js", "alpha:0.3", "alpha:0.7",
                                    "squared_hellinger", "jeffreys")  # f-DPO members; "name:v" sets a parameter
    betas: tuple[float, ...] = (0.05, 0.1, 0.3, 1.0)  # regularisation strengths, each trained separately
    batch_pairs: int = 4096  # preference pairs drawn per step (i == j dropped); under torchrun the whole job's
    # "natural": logits step -lr (F + damping mean(diag F) I)^{-1} grad with F = align.pair_fisher on the step's
    # pairs (the member's own curvature); "adam": torch Adam on the logits (stalls, see the module docstring)
    optimizer: str = "natural"
    lr: float = 1.0  # step size (decayed by engine.lr_schedule); 1 is a full Gauss-Newton step; Adam wants ~0.2
    damping: float = 1e-3  # natural gradient: Levenberg damping, relative to the mean diagonal of F
    average_tail: float = 0.5  # natural gradient: report the mean of the iterates over this last fraction of steps
    tv_tolerance: float = 0.05  # a trained policy "reaches its optimum" when TV(pi, pi*) is below this
    resume: bool = False  # resume every training run from its latest checkpoint
    engine: EngineConfig = dataclasses.field(  # training loop settings
        default_factory=functools.partial(unclipped_engine, 300, 50, lr_schedule="cosine"))

    CHECKS = dict(  # one per field: divmin.engine.validate
        responses=Int(ge=2), seed=Int(ge=0), ref_scale=Number(gt=0), reward_scale=Number(gt=0),
        divergences=Tuple(each=IsDivergence(parse=divergence, capability="implicit_reward"), min_len=1),
        betas=Tuple(each=Number(gt=0), min_len=1), batch_pairs=Int(ge=1), optimizer=OneOf(("natural", "adam")),
        lr=Number(gt=0), damping=Number(gt=0), average_tail=Number(gt=0, le=1), tv_tolerance=Number(gt=0),
        resume=Bool(), engine=Instance(EngineConfig),
    )

    def __post_init__(self) -> None:
        validate(self)


def make_bandit(config: FDPOBanditConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(pi_ref, R), both (K,) float64, from ``config.seed``."""
    g = torch.Generator().manual_seed(config.seed)
    ref = torch.softmax(config.ref_scale * torch.randn(config.responses, generator=g, dtype=F64), 0)
    reward = config.reward_scale * torch.randn(config.responses, generator=g, dtype=F64)
    return ref, reward


class _Logits(nn.Module):
    """One row of logits per (divergence, beta); the optimizer treats the rows independently."""

    def __init__(self, init: torch.Tensor, rows: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(init.expand(rows, -1).clone())


class NaturalGradient(torch.optim.Optimizer):
    """Damped natural-gradient steps on a (rows, K) logits matrix: ``theta -= lr (F + d I)^{-1} grad`` per row.

    ``F`` (rows, K, K) is set by the task before every step (``self.fisher``); ``d`` is
    ``damping`` times the mean diagonal of each row's F. Every coordinate of a step is
    clipped to [-1, 1] (a trust region: far from the optimum F can be nearly singular).
    From step ``average_from`` on, the running mean of the iterates is kept in the state
    (``averaged``): Polyak-Ruppert averaging, which brings stochastic steps close to the
    efficient estimator's error instead of the error of the last few minibatches.
    """

    def __init__(self, params, lr: float, damping: float, average_from: int) -> None:
        super().__init__(params, dict(lr=lr, damping=damping, average_from=average_from))
        self.fisher: torch.Tensor | None = None

    def averaged(self, p: torch.Tensor) -> torch.Tensor:
        """The averaged iterate of parameter ``p`` (``p`` itself before averaging starts)."""
        return self.state[p].get("mean", p).detach()

    @torch.no_grad()
    def step(self, closure=None):
        if self.fisher is None:
            raise RuntimeError("NaturalGradient.step: set `fisher` (rows, K, K) before stepping")
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                f = self.fisher.to(F64)
                # floored: a step without pairs has F = 0 and a zero gradient, hence a zero step
                scale = (group["damping"] * f.diagonal(dim1=-2, dim2=-1).mean(-1)).clamp_min(torch.finfo(F64).tiny)
                f = f + scale[:, None, None] * torch.eye(f.shape[-1], dtype=F64, device=f.device)
                delta = torch.linalg.solve(f, p.grad.to(F64)[..., None])[..., 0].clamp(-1.0, 1.0)
                p.sub_(group["lr"] * delta.to(p.dtype))
                state = self.state[p]
                state["step"] = state.get("step", 0) + 1
                if state["step"] > group["average_from"]:
                    n = state["step"] - group["average_from"]
                    state["mean"] = p.detach().clone() if n == 1 else state["mean"] + (p.detach() - state["mean"]) / n
        self.fisher = None  # one Fisher per step: never reuse a stale one
        return None


class FDPOBanditTask:
    """Engine task: every (divergence, beta) policy trained on the same sampled pairs each step."""

    def __init__(self, config: FDPOBanditConfig) -> None:
        self.config = config
        self.ref, self.reward = make_bandit(config)
        self.runs = [(spec, divergence(spec), float(b)) for spec in config.divergences for b in config.betas]

    def models(self) -> dict[str, nn.Module]:
        return {"policies": _Logits(self.ref.log(), len(self.runs))}

    def optimizers(self, models: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        c, params = self.config, models["policies"].parameters()
        if c.optimizer == "adam":
            self._natural = None
            return {"policies": torch.optim.Adam(params, lr=c.lr)}
        self._natural = NaturalGradient(params, c.lr, c.damping, int(c.engine.max_steps * (1 - c.average_tail)))
        return {"policies": self._natural}

    def sample_pairs(self, ctx) -> tuple[torch.Tensor, torch.Tensor]:
        """(chosen, rejected) indices: i, j ~ pi_ref, i != j, chosen = i w.p. sigmoid(R_i - R_j)."""
        ref, reward = self.ref.to(ctx.device), self.reward.to(ctx.device)
        ij = torch.multinomial(ref, 2 * self.config.batch_pairs, replacement=True, generator=ctx.generator)
        i, j = ij.view(2, -1)
        keep = i != j
        i, j = i[keep], j[keep]
        first_wins = torch.rand(i.shape, generator=ctx.generator, device=ctx.device, dtype=F64) < torch.sigmoid(
            reward[i] - reward[j])
        return torch.where(first_wins, i, j), torch.where(first_wins, j, i)

    def step_pairs(self, ctx) -> tuple[torch.Tensor, torch.Tensor]:
        """The step's whole batch of pairs, the same on every process: process 0 draws it from its generator
        (the one-process stream, so a run's pairs do not depend on the number of processes) and broadcasts it."""
        if ctx.num_processes == 1:
            return self.sample_pairs(ctx)
        buf = torch.full((2, self.config.batch_pairs), -1, dtype=torch.long, device=ctx.device)  # -1: dropped i == j
        if ctx.process_index == 0:
            chosen, rejected = self.sample_pairs(ctx)
            buf[0, : chosen.numel()], buf[1, : rejected.numel()] = chosen, rejected
        buf = broadcast(buf, from_process=0)
        kept = buf[0] >= 0
        return buf[0, kept], buf[1, kept]

    def train_step(self, batch: object, ctx) -> StepOutput:
        """Each process takes every W-th pair of the step's batch (W processes). Its loss is its pairs' sum over
        the batch size N, times W, so that DDP's mean of the gradients is the gradient of the mean over all N
        pairs; the Fisher's shares are summed over processes likewise. Every process then takes the one-process
        step on the whole batch (up to float rounding)."""
        chosen, rejected = self.step_pairs(ctx)
        total_pairs = chosen.numel()
        chosen, rejected = chosen[ctx.process_index:: ctx.num_processes], rejected[ctx.process_index:: ctx.num_processes]
        mine = chosen.numel()
        share = mine * ctx.num_processes / max(total_pairs, 1)  # exactly 1.0 in one process
        logp = F.log_softmax(ctx.call("policies", lambda m: m.logits), dim=-1)  # through the DDP wrapper
        logref = self.ref.log().to(ctx.device)
        total, per_div = 0.0, {}
        for row, (spec, div, beta) in enumerate(self.runs):
            if mine:
                loss = share * fdpo_loss(logp[row, chosen], logp[row, rejected], logref[chosen], logref[rejected],
                                         divergence=div, beta=beta).loss
            else:  # no pair fell to this process: it still joins DDP's gradient all-reduce
                loss = 0.0 * logp[row].sum()
            total = total + loss
            per_div.setdefault(f"loss/{spec}", []).append(loss.detach())  # averaged over processes when logged
        if self._natural is not None:
            self._set_fisher(ctx, logp, logref, chosen, rejected, mine / max(total_pairs, 1))
        metrics = {k: torch.stack(v).mean() for k, v in per_div.items()}
        return StepOutput(loss=total, metrics={**metrics, "pairs": float(total_pairs)})

    def _set_fisher(self, ctx, logp: torch.Tensor, logref: torch.Tensor, chosen: torch.Tensor,
                    rejected: torch.Tensor, share: float) -> None:
        """The natural gradient's F: the Fisher of the step's whole batch, the same on every process (each adds
        its pairs' share, summed over processes), averaged over the micro-batches as the gradient is."""
        k = logp.shape[-1]
        if chosen.numel():
            fisher = torch.stack([pair_fisher(logp[row], logref, chosen, rejected, divergence=div, beta=beta)
                                  for row, (_, div, beta) in enumerate(self.runs)])
            fisher = fisher * share
        else:
            fisher = torch.zeros(len(self.runs), k, k, dtype=F64, device=logp.device)
        if ctx.grad_accum_steps > 1:
            fisher = fisher / ctx.grad_accum_steps
            if ctx.micro_step > 0 and self._natural.fisher is not None:
                fisher = fisher + self._natural.fisher
        if ctx.sync_gradients and ctx.num_processes > 1:  # once per step, when the optimizer steps
            fisher = ctx.accelerator.reduce(fisher, reduction="sum")
        self._natural.fisher = fisher


def _evaluate(task: FDPOBanditTask, logits: torch.Tensor) -> list[dict]:
    rows = []
    for row, (spec, div, beta) in enumerate(task.runs):
        pi = torch.softmax(logits[row].detach().cpu().to(F64), 0)
        opt = fdpo_optimum(task.ref, task.reward, divergence=div, beta=beta)
        m = bandit_metrics(pi, task.ref, task.reward, divergence=div, beta=beta, optimum=opt)
        m_opt = bandit_metrics(opt, task.ref, task.reward, divergence=div, beta=beta, optimum=opt)
        loss = [float(population_fdpo_loss(p.log(), task.ref.log(), task.reward, divergence=div, beta=beta)) for p in (pi, opt)]
        rows.append({"divergence": spec, "beta": beta, "reward": m["reward"], "entropy": m["entropy"],
                     "KL(pi||ref)": m["kl"], "ECE": m["ece"], "TV to opt": m["tv_to_optimum"],
                     "loss gap": loss[0] - loss[1],
                     # a count of pairs: the bound is often far below one (any data pin the optimum)
                     "pairs needed": max(1, math.ceil(optimum_sample_size(
                         task.ref, task.reward, divergence=div, beta=beta, tv=task.config.tv_tolerance,
                         optimum=opt))),
                     "opt reward": m_opt["reward"], "opt entropy": m_opt["entropy"], "opt KL": m_opt["kl"]})
    return rows


def reward_vs_kl_plot(rows: list[dict], ref_reward: float, path: Path) -> Path:
    """Expected true reward vs KL(pi || pi_ref), a colour per divergence: trained policies as filled dots
    (solid line, each labelled with its beta) and closed-form optima as larger hollow diamonds drawn on
    top (dashed line), so that an optimum under its trained point stays visible. The right panel zooms
    onto the smallest beta, where the members crowd together, and names the member at each point."""
    betas = sorted({r["beta"] for r in rows})
    zoom = betas[:1] if len(betas) > 1 else []
    fig, axes = plt.subplots(1, 2 if zoom else 1, figsize=(12.5 if zoom else 7.2, 5.0), squeeze=False)
    specs = list(dict.fromkeys(r["divergence"] for r in rows))
    _reward_kl_points(axes[0, 0], rows, specs, lambda r: f"β={r['beta']:g}")
    if zoom:
        _reward_kl_points(axes[0, 1], [r for r in rows if r["beta"] in zoom], specs, lambda r: r["divergence"])
    for ax in axes[0]:
        ax.set_xlabel("KL(pi || pi_ref)")
    axes[0, 0].axhline(ref_reward, color="0.6", lw=0.8, ls=":", label="pi_ref")  # not in the zoom: it would unzoom
    axes[0, 0].set_ylabel("expected true reward")
    axes[0, 0].set_title("all betas", fontsize=9)
    if zoom:
        axes[0, 1].set_title(f"zoom: beta = {zoom[0]:g}, the member named at each point", fontsize=9)
    axes[0, 0].plot([], [], "D", ms=9, markerfacecolor="none", markeredgecolor="k",
                    label="closed-form optimum (hollow ◇)")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("f-DPO bandit: trained (filled o, solid) vs closed-form optimum (hollow ◇, dashed); "
                 "each trained point labelled with its beta", fontsize=9)
    data = {"kl": [r["KL(pi||ref)"] for r in rows], "reward": [r["reward"] for r in rows],
            "beta": [r["beta"] for r in rows], "divergence": [r["divergence"] for r in rows],
            "opt_kl": [r["opt KL"] for r in rows], "opt_reward": [r["opt reward"] for r in rows], "zoom_betas": zoom}
    return save_figure(fig, path, data=data)


def _reward_kl_points(ax, rows: list[dict], specs: list[str], text: Callable[[dict], str]) -> None:
    """Trained points (labelled ``text(row)``) and hollow optimum diamonds above them, a colour per member."""
    for c, spec in enumerate(specs):
        mine = sorted((r for r in rows if r["divergence"] == spec), key=lambda r: r["beta"])
        ax.plot([r["KL(pi||ref)"] for r in mine], [r["reward"] for r in mine], "o-", color=f"C{c}", ms=5, lw=1,
                zorder=2, label=f"{spec} (trained)")
        ax.plot([r["opt KL"] for r in mine], [r["opt reward"] for r in mine], "D--", ms=9, lw=0.8,
                markerfacecolor="none", markeredgecolor=f"C{c}", markeredgewidth=1.6, color=f"C{c}", alpha=0.9,
                zorder=4)  # drawn after and above the dots: an optimum under its trained point stays visible
        for r in mine:
            ax.annotate(text(r), (r["KL(pi||ref)"], r["reward"]), xytext=(4, -9),
                        textcoords="offset points", fontsize=6, color=f"C{c}", zorder=5)


def _why_not_reached(row: dict, pairs_seen: int) -> str:
    """The measured reason a trained policy missed its optimum: too few pairs, or a flat loss on the way."""
    if row["pairs needed"] > pairs_seen:
        return (f"statistical: an efficient estimator needs ~{row['pairs needed']:.3g} pairs for E TV < tolerance, "
                f"the run saw {pairs_seen:.3g}")
    return (f"optimisation: near the optimum ~{row['pairs needed']:.3g} pairs would pin it ({pairs_seen:.3g} seen), "
            f"but the loss is flat on the way: within {row['loss gap']:.2g} nats of the optimum's at TV "
            f"{row['TV to opt']:.2f}")


def _summary(rows: list[dict], config: FDPOBanditConfig, pairs_seen: int) -> dict:
    """Per beta: the greediest divergence (highest reward) and the one keeping most entropy."""
    def best(key: str) -> dict[str, str]:
        out = {}
        for beta in config.betas:
            at = [r for r in rows if r["beta"] == float(beta)]
            out[str(float(beta))] = max(at, key=lambda r: r[key])["divergence"]
        return out

    max_tv = max(r["TV to opt"] for r in rows)
    reached = [f"{r['divergence']}@{r['beta']:g}" for r in rows if r["TV to opt"] < config.tv_tolerance]
    return {
        "greediest_at_optimum": best("opt reward"), "most_entropy_at_optimum": best("opt entropy"),
        "greediest_trained": best("reward"), "most_entropy_trained": best("entropy"),
        "max_tv_to_optimum": max_tv, "all_reach_optimum": bool(max_tv < config.tv_tolerance),
        "reached_optimum": reached, "max_loss_gap": max(r["loss gap"] for r in rows),
        "not_reached": {f"{r['divergence']}@{r['beta']:g}": _why_not_reached(r, pairs_seen) for r in rows
                        if r["TV to opt"] >= config.tv_tolerance},
        "pairs_seen": pairs_seen,
        "max_ece": max(r["ECE"] for r in rows),
    }


@recipe("fdpo-bandit", FDPOBanditConfig,
        "f-DPO on a K-armed preference bandit: trained policies vs each divergence's closed-form optimum",
        full_size=("responses=64", "batch_pairs=4096", "engine.max_steps=600"))
def run_fdpo_bandit(config: FDPOBanditConfig, out_dir: Path) -> RecipeResult:
    task = FDPOBanditTask(config)
    trainer = fit_task(task, config.engine, out_dir, resume=config.resume)
    logits = trainer.models["policies"].logits
    rows = _evaluate(task, logits if task._natural is None else task._natural.averaged(logits))
    ref_reward = float((task.ref * task.reward).sum())
    plot = reward_vs_kl_plot(rows, ref_reward, out_dir / "reward_vs_kl.png")
    # kept pairs (i != j) per step, in expectation, times the steps taken
    pairs_seen = round(config.batch_pairs * (1.0 - float((task.ref ** 2).sum())) * config.engine.max_steps)
    summary = _summary(rows, config, pairs_seen)
    summary.update(ref_reward=ref_reward, ref_entropy=float(-(task.ref * task.ref.log()).sum()),
                   max_reward=float(task.reward.max()))
    cols = ["divergence", "beta", "reward", "entropy", "KL(pi||ref)", "ECE", "TV to opt", "loss gap", "pairs needed",
            "opt reward", "opt entropy"]
    return RecipeResult(cols, rows, [str(plot)], summary)

