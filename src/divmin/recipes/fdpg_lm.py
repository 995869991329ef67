"""Recipe ``fdpg-lm``: f-DPG on a tiny GPT-2 toward a pointwise-constrained target.

1. Warm-up: a tiny GPT-2 learns the synthetic answer corpus of :mod:`.tiny_lm`
   (``"tell me about <topic> :" -> "<topic> w1 ... wk [EOS]"``, words from a
   GOOD, BAD or NEUTRAL pool). It is the base model a(y | x).
2. Target (GDC): P(y | x) proportional to a(y | x) (b(y) + epsilon), with b(y) = 1 when
   the answer has at least ``min_good`` GOOD words: a constraint the base meets
   on ~15% of its samples, satisfiable in many different ways (multi-modal).
3. For every divergence a copy of the base is trained with
   :class:`divmin.align.FDPGTrainer` (``mode`` online or offline, per-context
   running Z) on the prompts of the training topics.
4. Evaluation by Monte Carlo on the first ``objective_prompts`` training prompts (the
   objective each member minimised: its own D_f, "own D_f (train)") and on the held-out
   topics' prompts (generalisation): every D_f(P || pi), KL both ways among them, pools
   ``z_samples`` base samples with ``eval_samples`` policy samples
   (:func:`divmin.estimators.pooled_divergence`), log Z(x) from the base samples
   (weights P / a proportional to b + epsilon); ESS(P/pi), the effective sample size of
   forward KL's gradient weights on the policy's samples; alignment E_pi[b]; entropy
   -E_pi[log pi]; distinct-2 and self-BLEU of the samples (diversity); mean length.
   ``summary`` holds every member's D_f on the training prompts for every f and the
   computed claims (each member best on its own objective; forward KL mass-covering).

Full-size run (``divmin recipes`` shows it): ``divmin run fdpg-lm --out runs/fdpg-lm --full``, that is
``--set warmup.corpus_size=3000 --set warmup.steps=300 --set fdpg.engine.max_steps=450 --set eval_samples=256
--set z_samples=4096``. Keys: the recipe's own fields, ``warmup.*`` (:class:`._lm_warmup.WarmUpConfig`) and
``fdpg.*`` (:class:`divmin.align.FDPGConfig`: ``fdpg.lr``, ``fdpg.mode``, ``fdpg.samples_per_context``...).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from pathlib import Path

import torch

from ..align import EnergyTarget, FDPGConfig, FDPGTrainer, PointwiseConstraint
from ..divergences import divergence
from ..engine import Bool, EngineConfig, Instance, Int, IsDivergence, Number, Tuple, validate
from ..estimators import effective_sample_size, pooled_divergence, self_normalized_log_z
from ..eval import distinct_n, self_bleu
from ..lm import completion_logps, sample_n
from . import tiny_lm as lm
from ._plots import points_panels
from ._engines import refuse_owned
from ._lm_warmup import WarmUpConfig, warm_up
from ._registry import RecipeResult, recipe
from ._runs import resumable, run_engine

__all__ = ["FDPGLMConfig", "run_fdpg_lm"]

_GOOD = frozenset(lm.GOOD)


def _default_fdpg() -> FDPGConfig:
    # 150 steps left every member still falling (KL(P||pi) of forward KL 0.18 at 150, 0.05 at 300-450)
    engine = EngineConfig(max_steps=300, log_every=50, progress=True, max_grad_norm=1.0)
    return FDPGConfig(lr=1e-3, contexts_per_step=4, samples_per_context=16, max_new_tokens=10, engine=engine)


@dataclasses.dataclass
class FDPGLMConfig:
    divergences: tuple[str, ...] = ("reverse_kl", "forward_kl", "js", "total_variation")  # f-DPG members
    seed: int = 0  # model init, corpus and evaluation sampling
    warmup: WarmUpConfig = dataclasses.field(default_factory=WarmUpConfig)  # the base model and its warm-up
    min_good: int = 2  # b(y) = 1 iff the answer has at least this many GOOD words
    epsilon: float = 1e-2  # target a (b + epsilon): finite for reverse-KL-type members
    heldout_topics: int = 2  # the last k topics are only used for evaluation
    objective_prompts: int = 4  # training prompts (the first k) on which each member's own objective is measured
    eval_samples: int = 256  # evaluation samples per evaluated prompt and policy
    z_samples: int = 4096  # base samples per evaluated prompt for log Z (pooled with the policy's for D_f)
    resume: bool = False  # resume every training run from its latest checkpoint
    # f-DPG settings shared by every divergence (its divergence is set per run from `divergences`);
    # fdpg.max_new_tokens also caps the evaluation samples; its engine also runs the warm-up
    fdpg: FDPGConfig = dataclasses.field(default_factory=_default_fdpg)

    CHECKS = dict(  # one per field: divmin.engine.validate
        divergences=Tuple(each=IsDivergence(parse=divergence), min_len=1), seed=Int(ge=0),
        warmup=Instance(WarmUpConfig), min_good=Int(ge=1), epsilon=Number(gt=0, lt=1),
        heldout_topics=Int(ge=1, le=len(lm.TOPICS) - 1), objective_prompts=Int(ge=1), eval_samples=Int(ge=2),
        z_samples=Int(ge=1), resume=Bool(), fdpg=Instance(FDPGConfig),
    )

    def __post_init__(self) -> None:
        validate(self)
        self.warmup.check_cap(self.fdpg.max_new_tokens)
        refuse_owned(self, {"fdpg.divergence": "divergences"})
        if self.objective_prompts > len(lm.TOPICS) - self.heldout_topics:
            raise ValueError(f"`objective_prompts` must be <= the {len(lm.TOPICS) - self.heldout_topics} "
                             "training topics")
        if self.min_good > self.warmup.response_words[1]:
            raise ValueError(f"`min_good` must be <= {self.warmup.response_words[1]} (the max of "
                             "`warmup.response_words`)")


def _constraint(config: FDPGLMConfig) -> PointwiseConstraint:
    k = config.min_good
    return PointwiseConstraint(lambda texts: [sum(w in _GOOD for w in t.split()) >= k for t in texts],
                               epsilon=config.epsilon)


def _train_one(spec: str, base: torch.nn.Module, tokenizer, contexts: list[str], config: FDPGLMConfig,
               out_dir: Path) -> torch.nn.Module:
    policy = copy.deepcopy(base).requires_grad_(True).train()
    engine = run_engine(config.fdpg.engine, out_dir / "fdpg" / re.sub(r"[^\w.-]", "_", spec))
    cfg = dataclasses.replace(config.fdpg, divergence=divergence(spec), engine=engine)
    target = EnergyTarget() * _constraint(config)
    trainer = FDPGTrainer(policy, tokenizer, target, base_model=base, contexts=contexts, config=cfg)
    trainer.fit(resume=resumable(engine, config.resume))
    return trainer.model.cpu().eval()


@torch.no_grad()
def _draw(model, tokenizer, prompt: torch.Tensor, n: int, config: FDPGLMConfig, seed: int):
    comp = sample_n(model, prompt, n, max_new_tokens=config.fdpg.max_new_tokens, eos_id=lm.EOS_ID, pad_id=lm.PAD_ID,
                    generator=torch.Generator().manual_seed(seed))
    rows = [t[m & (t != lm.EOS_ID)].tolist() for t, m in zip(comp.tokens, comp.mask)]
    return comp, tokenizer.batch_decode(rows, skip_special_tokens=True)


@torch.no_grad()
def _base_draws(base, tokenizer, prompts: list[torch.Tensor], config: FDPGLMConfig, offset: int) -> list[dict]:
    """Per prompt: ``z_samples`` base samples, log a, log b and the target's log Z(x) (shared by every policy)."""
    constraint, out = _constraint(config), []
    for k, prompt in enumerate(prompts):
        comp, texts = _draw(base, tokenizer, prompt, config.z_samples, config, config.seed + offset + k)
        log_b = constraint(texts)
        # the base is the proposal: s - log q = (log a + log b) - log a = log b, formed exactly
        out.append({"prompt": prompt, "comp": comp, "log_b": log_b, "log_a": completion_logps(base, prompt, comp),
                    "log_z": float(self_normalized_log_z(log_b, torch.zeros_like(log_b)))})
    return out


@torch.no_grad()
def evaluate_policy(policy, base, tokenizer, draws: list[dict], config: FDPGLMConfig,
                    offset: int = 0) -> dict[str, float]:
    """Monte-Carlo metrics of ``policy`` against the target, averaged over the prompts of ``draws``.

    D_f(P || pi) for every f of the config (key ``"D[f]"``, KL(P||pi) and KL(pi||P) among them) pools the
    base's and the policy's samples (:func:`divmin.estimators.pooled_divergence`): weights P/M and pi/M
    are both bounded, where pi/a alone (the policy far from the base) or P/pi alone (the policy
    missing some of P) are heavy-tailed. ``ESS(P/pi)``: effective sample size of P/pi on the policy's
    samples, the weights of forward KL's gradient -E_pi[(P/pi) grad log pi].
    """
    constraint, rows = _constraint(config), []
    for k, d in enumerate(draws):
        prompt, log_z = d["prompt"], d["log_z"]
        comp, texts = _draw(policy, tokenizer, prompt, config.eval_samples, config, config.seed + offset + k)
        logq, loga, log_b = (completion_logps(policy, prompt, comp), completion_logps(base, prompt, comp),
                             constraint(texts))
        logq_z = completion_logps(policy, prompt, d["comp"])
        model, scores = torch.cat([logq_z, logq]), torch.cat([d["log_a"] + d["log_b"], loga + log_b])
        props, counts = torch.stack([torch.cat([d["log_a"], loga]), model]), [len(logq_z), len(logq)]
        div = {f"D[{spec}]": pooled_divergence(model, scores, props, counts, divergence=spec, log_z=log_z)
               for spec in dict.fromkeys(("forward_kl", "reverse_kl") + tuple(config.divergences))}
        words = [t.split() for t in texts]
        rows.append({"alignment": float(constraint.satisfied(texts).float().mean()),
                     "KL(P||pi)": div["D[forward_kl]"], "KL(pi||P)": div["D[reverse_kl]"], **div,
                     "ESS(P/pi)": effective_sample_size(loga + log_b - log_z - logq),
                     "KL(pi||base)": float((logq - loga).mean()), "entropy": float(-logq.mean()),
                     "distinct-2": distinct_n(words), "self-BLEU": self_bleu(words, max_samples=100),
                     "length": float(comp.mask.sum(1).float().mean()),
                     "target alignment": float(torch.softmax(d["log_b"].double(), 0)[
                         d["log_b"] > math.log(1.5 * config.epsilon)].sum())})
    return {key: sum(r[key] for r in rows) / len(rows) for key in rows[0]}


def _plot(rows: list[dict], base_row: dict, path: Path) -> Path:
    return points_panels(rows, base_row, path, x_keys={"entropy": "entropy (nats, Monte Carlo)",
                                                       "distinct-2": "distinct-2"},
                         y_key="alignment", ylabel="alignment E_pi[b]", label_key="divergence",
                         reference_label="base a",
                         title="f-DPG on a tiny GPT-2 (held-out prompts): one point per divergence")


# `divmin run fdpg-lm --full`: the sizes of the published table
FULL_SIZE = (
    "warmup.corpus_size=3000",
    "warmup.steps=300",
    "fdpg.engine.max_steps=450",
    "eval_samples=256",
    "z_samples=4096",
)


@recipe("fdpg-lm", FDPGLMConfig,
        "f-DPG on a warmed-up tiny GPT-2 toward a GDC constraint: alignment, KL both ways and diversity per divergence",
        full_size=FULL_SIZE)
def run_fdpg_lm(config: FDPGLMConfig, out_dir: Path) -> RecipeResult:
    tokenizer = lm.build_tokenizer()
    c = config
    base, sft_loss = warm_up(c.warmup, tokenizer, out_dir / "warmup", c.fdpg.engine, seed=c.seed, resume=c.resume)
    topics = list(lm.TOPICS)
    train_ctx = [lm.prompt_text(t) for t in topics[:-c.heldout_topics]]
    ids = [torch.tensor(tokenizer(lm.prompt_text(t), add_special_tokens=False)["input_ids"]) for t in topics]
    held = _base_draws(base, tokenizer, ids[-c.heldout_topics:], c, 100)
    seen = _base_draws(base, tokenizer, ids[:c.objective_prompts], c, 300)  # the training objective's prompts
    base_row = evaluate_policy(base, base, tokenizer, held, c)
    rows = []
    for spec in c.divergences:
        policy = _train_one(spec, base, tokenizer, train_ctx, c, out_dir)
        train = evaluate_policy(policy, base, tokenizer, seen, c, offset=200)
        m = evaluate_policy(policy, base, tokenizer, held, c)
        rows.append({"divergence": spec, "behaviour": divergence(spec).behaviour, "own D_f (train)": train[f"D[{spec}]"],
                     **{f"{k} (train)": train[k] for k in ("KL(P||pi)", "KL(pi||P)", "ESS(P/pi)", "entropy")},
                     **{k: v for k, v in m.items() if not k.startswith("D[")},
                     "_train": train})
    plot = _plot(rows, base_row, out_dir / "alignment_vs_diversity.png")
    summary = {"base_alignment": base_row["alignment"], "target_alignment": base_row["target alignment"],
               "base_entropy": base_row["entropy"], "base_distinct2": base_row["distinct-2"],
               "most_aligned": max(rows, key=lambda r: r["alignment"])["divergence"],
               "most_diverse": max(rows, key=lambda r: r["distinct-2"])["divergence"],
               "best_KL(P||pi)": min(rows, key=lambda r: r["KL(P||pi)"])["divergence"],
               "best_KL(P||pi) (train)": min(rows, key=lambda r: r["KL(P||pi) (train)"])["divergence"],
               **_claims(rows), "warmup_loss": sft_loss}
    cols = ["divergence", "behaviour", "own D_f (train)", "KL(P||pi) (train)", "KL(pi||P) (train)", "ESS(P/pi) (train)",
            "entropy (train)", "alignment", "KL(P||pi)", "KL(pi||P)", "ESS(P/pi)", "KL(pi||base)", "entropy", "distinct-2", "self-BLEU",
            "length"]
    rows = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    return RecipeResult(cols, rows, [str(plot)], summary)


def _claims(rows: list[dict]) -> dict:
    """f-DPG's claims, computed: each member best on its own D_f on the training prompts (the objective it
    minimised); forward KL mass-covering: the lowest KL(P||pi) and the highest entropy, on the training
    prompts and on the held-out ones."""
    splits = {"train": {r["divergence"]: r["_train"] for r in rows}, "held-out": {r["divergence"]: r for r in rows}}
    own = splits["train"]
    out = {"own_objective_matrix (train)": {p: {f: round(v, 4) for f, v in d.items() if f.startswith("D[")}
                                            for p, d in own.items()},
           "best_on_own_objective (train)": {f: all(own[f][f"D[{f}]"] <= own[g][f"D[{f}]"] for g in own) for f in own}}
    if "forward_kl" in own:
        for split, by in splits.items():
            out[f"forward_kl_mass_covering ({split})"] = (
                by["forward_kl"]["KL(P||pi)"] == min(m["KL(P||pi)"] for m in by.values())
                and by["forward_kl"]["entropy"] == max(m["entropy"] for m in by.values()))
    return out
