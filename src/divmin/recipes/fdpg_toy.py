"""Recipe ``fdpg-toy``: f-DPG on an enumerable sequence space, measured exactly.

The space is every sequence of ``length`` tokens over ``vocab`` tokens (625 by
default). For each base seed, a random full-capacity autoregressive base a(x)
(:class:`divmin.data.PrefixTreeLM`) times the constraint "token ``token`` at
least ``min_count`` times" (smoothed by ``epsilon`` so that every f is finite)
is the target P = a b / Z: a multi-modal distribution. The policy is a
per-position bigram table (:class:`divmin.data.BigramLM`) that cannot
represent P, so divergences must choose what to give up.

Every divergence trains its own policy, all in one engine run, by Monte-Carlo
f-DPG: ``batch`` samples of each policy per step, log r = s - log Z - log Q with a
running importance-sampling estimate of log Z (:class:`divmin.estimators.LogZEstimator`),
and :func:`divmin.estimators.score_function_surrogate` with a moving-average baseline. Then,
EXACTLY by enumeration: KL(P || Q), KL(Q || P), the divergence's own objective
D_f(P || Q) against that of the exact-gradient optimum (the same policy class
trained on the full enumeration, ``exact_steps`` Adam steps), alignment
E_Q[b], entropy H(Q), the acceptance rate 1 / max P/Q of rejection sampling P
from Q, and modes covered (a mode is a sequence that satisfies
the constraint and is more probable under P than all its Hamming-1
neighbours; Q covers it when Q(x) >= ``coverage`` * P(x)).

The table averages over base seeds; ``per_seed.json`` has every run, and the
summary counts on how many seeds each part of the paper's claim holds, comparing
the paper's members (forward KL, reverse KL, JS, TV) among those trained.

Full-size run (``divmin recipes`` shows it): ``divmin run fdpg-toy --out runs/fdpg-toy --full``, that is
``--set "base_seeds=(0, 1, 2, 3, 4)" --set batch=256 --set engine.max_steps=250 --set exact_steps=400``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from pathlib import Path

import torch
from torch import nn

from ..align import EnergyTarget, PointwiseConstraint
from ..data import BigramLM, PrefixTreeLM, all_sequences
from ..divergences import Divergence, available_divergences, divergence
from ..engine import Bool, EngineConfig, Instance, Int, IsDivergence, Number, StepOutput, Tuple, atomic_write, validate
from ..estimators import LogZEstimator, MovingBaseline, score_function_surrogate
from ..eval import acceptance_rate, exact_divergence
from ._plots import plt, save_figure  # headless (Agg) matplotlib
from ._engines import fit_task, unclipped_engine
from ._registry import RecipeResult, is_main_process, recipe

__all__ = ["FDPGToyConfig", "FDPGToyTask", "run_fdpg_toy", "toy_target", "train_exact"]


@dataclasses.dataclass
class FDPGToyConfig:
    divergences: tuple[str, ...] = ()  # registry specs ("name" or "name:value"); empty = every member
    base_seeds: tuple[int, ...] = (0, 1, 2)  # one random base model (and target) per seed
    vocab: int = 5  # tokens
    length: int = 4  # sequence length (vocab ** length sequences)
    base_scale: float = 1.0  # spread of the base model's random logits
    token: int = 3  # the constrained token
    min_count: int = 2  # b(x) = 1 iff `token` occurs at least this often
    epsilon: float = 1e-3  # target = a (b + epsilon): keeps reverse-KL-type members finite
    batch: int = 256  # policy samples per step and divergence
    lr: float = 0.05  # Adam learning rate (Monte-Carlo and exact-gradient runs)
    baseline_decay: float = 0.9  # moving-average baseline
    exact_steps: int = 400  # Adam steps of the exact-gradient reference optimum
    coverage: float = 0.25  # a mode is covered when Q(x) >= coverage * P(x)
    resume: bool = False  # resume every training run from its latest checkpoint
    engine: EngineConfig = dataclasses.field(default_factory=functools.partial(unclipped_engine, 250, 50))  # the runs

    CHECKS = dict(  # one per field: divmin.engine.validate
        divergences=Tuple(each=IsDivergence(parse=divergence)), base_seeds=Tuple(each=Int(ge=0), min_len=1),
        vocab=Int(ge=2), length=Int(ge=2), base_scale=Number(ge=0), token=Int(ge=0), min_count=Int(ge=1),
        epsilon=Number(gt=0, lt=1), batch=Int(ge=1), lr=Number(gt=0), baseline_decay=Number(ge=0, lt=1),
        exact_steps=Int(ge=1), coverage=Number(gt=0, le=1), resume=Bool(), engine=Instance(EngineConfig),
    )

    def __post_init__(self) -> None:
        validate(self)
        if self.vocab ** self.length > 20000:
            raise ValueError("`vocab` ** `length` must be <= 20000 (the space is enumerated)")
        if self.token >= self.vocab or self.min_count > self.length:
            raise ValueError("`token` must be < `vocab` and `min_count` <= `length`")

    def specs(self) -> tuple[str, ...]:
        return self.divergences or tuple(available_divergences("f"))


def toy_target(config: FDPGToyConfig, seed: int) -> tuple[EnergyTarget, PointwiseConstraint, PrefixTreeLM]:
    """The base model, its constraint and the smoothed target a (b + epsilon) for one base seed."""
    base = PrefixTreeLM(config.vocab, config.length, scale=config.base_scale,
                        generator=torch.Generator().manual_seed(seed)).requires_grad_(False)
    tok, k = config.token, config.min_count
    constraint = PointwiseConstraint(lambda x: (x == tok).sum(1) >= k, epsilon=config.epsilon)
    return EnergyTarget(base.log_prob) * constraint, constraint, base


def _key(spec: str, seed: int) -> str:
    return f"{spec.replace(':', '=').replace('.', '_')}@{seed}"


class FDPGToyTask:
    """Engine task: one bigram policy per (divergence, base seed), Monte-Carlo f-DPG on each."""

    def __init__(self, config: FDPGToyConfig) -> None:
        self.config = config
        self.divs: dict[str, Divergence] = {s: divergence(s) for s in config.specs()}
        self.targets = {seed: toy_target(config, seed)[0] for seed in config.base_seeds}
        self.log_z = {seed: LogZEstimator() for seed in config.base_seeds}
        self.baselines = {_key(s, seed): MovingBaseline(config.baseline_decay)
                          for s in self.divs for seed in config.base_seeds}

    def models(self) -> dict[str, nn.Module]:
        c = self.config
        return {"policies": nn.ModuleDict({k: BigramLM(c.vocab, c.length) for k in self.baselines})}

    def optimizers(self, models: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        return {"policies": torch.optim.Adam(models["policies"].parameters(), lr=self.config.lr)}

    def train_step(self, batch: object, ctx) -> StepOutput:
        policies, total, metrics = ctx.unwrap("policies"), 0.0, {}  # sampling needs no gradient
        for seed, target in self.targets.items():
            draws = {s: policies[_key(s, seed)].sample(self.config.batch, ctx.generator) for s in self.divs}
            logps = ctx.call("policies", lambda m: {s: m[_key(s, seed)].log_prob(x) for s, x in draws.items()})
            scores = {s: target.log_score(x) for s, x in draws.items()}
            for s in self.divs:  # every policy's samples are unbiased evidence about the same Z
                log_z = self.log_z[seed].update(scores[s], logps[s].detach())[0]
            for s, div in self.divs.items():
                base = self.baselines[_key(s, seed)]
                log_ratio = scores[s] - log_z - logps[s].detach()  # log P - log Q, P = exp(s) / Z
                out = score_function_surrogate(logps[s], log_ratio, divergence=div, baseline=base())
                base.update(out)
                total = total + out.loss
        metrics["log_z/seed0"] = torch.tensor(self.log_z[self.config.base_seeds[0]].log_z())
        return StepOutput(loss=total, metrics=metrics)

    def state_dict(self) -> dict:
        return {"log_z": {str(s): e.state_dict() for s, e in self.log_z.items()},
                "baselines": {k: b.value for k, b in self.baselines.items()}}

    def load_state_dict(self, state: dict) -> None:
        for s, e in self.log_z.items():
            e.load_state_dict(state["log_z"][str(s)])
        for k, b in self.baselines.items():
            b.value = state["baselines"][k]


def train_exact(config: FDPGToyConfig, target: EnergyTarget, div: Divergence) -> BigramLM:
    """The exact-gradient reference: Adam on D_f(P || Q) computed over the whole space."""
    seqs = all_sequences(config.vocab, config.length)
    log_p = torch.log_softmax(target.log_score(seqs), 0)
    policy = BigramLM(config.vocab, config.length)
    opt = torch.optim.Adam(policy.parameters(), lr=config.lr)
    for _ in range(config.exact_steps):
        loss = exact_divergence(policy.log_prob(seqs), log_p, divergence=div)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return policy.requires_grad_(False)


def _modes(log_p: torch.Tensor, seqs: torch.Tensor, ok: torch.Tensor, vocab: int) -> torch.Tensor:
    """Indices of sequences that satisfy the constraint and beat every Hamming-1 neighbour under P."""
    n, length = seqs.shape
    place = vocab ** torch.arange(length - 1, -1, -1)
    idx = seqs @ place
    best = torch.ones(n, dtype=torch.bool)
    for t in range(length):
        for v in range(1, vocab):
            nb = seqs.clone()
            nb[:, t] = (nb[:, t] + v) % vocab
            best &= log_p > log_p[nb @ place]
    return idx[best & ok]


@torch.no_grad()
def _exact_row(spec: str, div: Divergence, policy: BigramLM, ref: BigramLM, log_p: torch.Tensor,
               seqs: torch.Tensor, ok: torch.Tensor, modes: torch.Tensor, coverage: float) -> dict:
    logq = policy.log_prob(seqs)
    q = logq.exp()
    objective, optimum = (float(exact_divergence(lq, log_p, divergence=div)) for lq in (logq, ref.log_prob(seqs)))
    return {"divergence": spec, "behaviour": div.behaviour,
            "KL(P||Q)": float(exact_divergence(logq, log_p, divergence="forward_kl")),
            "KL(Q||P)": float(exact_divergence(logq, log_p, divergence="reverse_kl")),
            "alignment": float(q[ok].sum()), "entropy": float(-(q * logq).sum()),
            "acceptance": acceptance_rate(logq, log_p, log_z=0.0),
            "modes": int((logq[modes] >= math.log(coverage) + log_p[modes]).sum()),
            "D_f / optimum": objective / optimum if optimum > 0 else math.nan}


def _mean_rows(per_seed: list[dict], specs: tuple[str, ...], n_modes: float) -> list[dict]:
    rows = []
    for spec in specs:
        mine = [r for r in per_seed if r["divergence"] == spec]
        row = {"divergence": spec, "behaviour": mine[0]["behaviour"]}
        for key in ("KL(P||Q)", "KL(Q||P)", "alignment", "entropy", "acceptance", "modes", "D_f / optimum"):
            row[key] = sum(r[key] for r in mine) / len(mine)
        row["entropy sd"] = (sum((r["entropy"] - row["entropy"]) ** 2 for r in mine) / len(mine)) ** 0.5
        row["modes"] = f"{row['modes']:.1f}/{n_modes:.1f}"
        rows.append(row)
    return rows


def _plot(per_seed: list[dict], targets: list[dict], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    specs = list(dict.fromkeys(r["divergence"] for r in per_seed))
    for c, spec in enumerate(specs):
        pts = [(r["entropy"], r["alignment"]) for r in per_seed if r["divergence"] == spec]
        ax.scatter(*zip(*pts), s=22, color=plt.cm.tab20(c % 20), label=spec)
    ax.scatter([t["entropy"] for t in targets], [t["alignment"] for t in targets], marker="*", s=120, c="k",
               label="target P")
    ax.set_xlabel("entropy H(Q) (nats, exact)")
    ax.set_ylabel("alignment E_Q[b] (exact)")
    ax.set_title("f-DPG on an enumerable toy: one point per divergence and base seed", fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    return save_figure(fig, path, data={"entropy": [r["entropy"] for r in per_seed],
                                        "alignment": [r["alignment"] for r in per_seed]})


PAPER_MEMBERS = ("forward_kl", "reverse_kl", "js", "total_variation")  # the f-DPG paper's four


def _claims(per_seed: list[dict], seeds: tuple[int, ...]) -> dict:
    """On how many base seeds each part of the paper's claim holds, comparing the paper's members."""
    out = {}
    for seed in seeds:
        rows = {r["divergence"]: r for r in per_seed if r["seed"] == seed and r["divergence"] in PAPER_MEMBERS}
        if not {"reverse_kl", "forward_kl", "js"} <= rows.keys():
            return out
        ent = {k: r["entropy"] for k, r in rows.items()}
        ali = {k: r["alignment"] for k, r in rows.items()}
        kl = {k: r["KL(P||Q)"] for k, r in rows.items()}
        tally = {
            "reverse_kl_least_entropy": min(ent, key=ent.get) == "reverse_kl",
            "reverse_kl_most_aligned": max(ali, key=ali.get) == "reverse_kl",
            "forward_kl_most_entropy": max(ent, key=ent.get) == "forward_kl",
            "forward_kl_best_KL(P||Q)": min(kl, key=kl.get) == "forward_kl",
            "js_between_on_entropy": ent["reverse_kl"] < ent["js"] < ent["forward_kl"],
            "js_between_on_alignment": ali["forward_kl"] < ali["js"] < ali["reverse_kl"],
        }
        for k, v in tally.items():
            out[k] = out.get(k, 0) + int(v)
    return {k: f"{v}/{len(seeds)}" for k, v in out.items()}


@recipe("fdpg-toy", FDPGToyConfig,
        "f-DPG on an enumerable sequence space: exact KL both ways, alignment, entropy and modes per divergence",
        full_size=("base_seeds=(0, 1, 2, 3, 4)", "batch=256", "engine.max_steps=250", "exact_steps=400"))
def run_fdpg_toy(config: FDPGToyConfig, out_dir: Path) -> RecipeResult:
    task = FDPGToyTask(config)
    trainer = fit_task(task, config.engine, out_dir, resume=config.resume)
    policies = trainer.models["policies"].cpu()
    seqs = all_sequences(config.vocab, config.length)
    per_seed, targets, n_modes = [], [], 0
    for seed in config.base_seeds:
        target, constraint, _ = toy_target(config, seed)
        log_p = torch.log_softmax(target.log_score(seqs), 0)
        ok = constraint.satisfied(seqs)
        modes = _modes(log_p, seqs, ok, config.vocab)
        n_modes += len(modes) / len(config.base_seeds)
        targets.append({"entropy": float(-(log_p.exp() * log_p).sum()), "alignment": float(log_p.exp()[ok].sum())})
        for spec, div in task.divs.items():
            ref = train_exact(config, target, div)
            row = _exact_row(spec, div, policies[_key(spec, seed)], ref, log_p, seqs, ok, modes, config.coverage)
            per_seed.append({**row, "seed": seed})
    rows = _mean_rows(per_seed, config.specs(), n_modes)
    plot = _plot(per_seed, targets, out_dir / "alignment_vs_entropy.png")
    summary = {"seeds": len(config.base_seeds), "target_entropy": sum(t["entropy"] for t in targets) / len(targets),
               "target_alignment": sum(t["alignment"] for t in targets) / len(targets),
               **_claims(per_seed, config.base_seeds)}
    if is_main_process():
        atomic_write(out_dir / "per_seed.json", json.dumps(per_seed, indent=1))
    cols = ["divergence", "behaviour", "KL(P||Q)", "KL(Q||P)", "alignment", "entropy", "entropy sd", "acceptance",
            "modes",
            "D_f / optimum"]
    return RecipeResult(cols, rows, [str(plot)], summary)
