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
4. Evaluation on the held-out topics' prompts, by Monte Carlo:
   alignment E_pi[b]; KL(pi || P) = E_pi[log pi - log P] and KL(P || pi) by
   importance sampling from the base (weights P / a proportional to b + epsilon),
   with log Z(x) from ``z_samples`` base samples per prompt; entropy
   -E_pi[log pi]; distinct-2 and self-BLEU of the samples (diversity); mean length.

Full-size run (``divmin recipes`` shows it): ``divmin run fdpg-lm --out runs/fdpg-lm --full``, that is
``--set corpus_size=3000 --set sft_steps=300 --set engine.max_steps=150 --set eval_samples=256
--set z_samples=4096``.
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
from ..estimators import self_normalized_log_z
from ..eval import distinct_n, is_divergence, self_bleu
from ..lm import completion_logps, sample_n
from . import tiny_lm as lm
from ._plots import points_panels
from ._registry import RecipeResult, recipe
from ._runs import resumable, run_engine

__all__ = ["FDPGLMConfig", "run_fdpg_lm"]

_GOOD = frozenset(lm.GOOD)


def _default_engine() -> EngineConfig:
    return EngineConfig(max_steps=150, log_every=25, progress=True, max_grad_norm=1.0)


@dataclasses.dataclass
class FDPGLMConfig:
    divergences: tuple[str, ...] = ("reverse_kl", "forward_kl", "js", "total_variation")  # f-DPG members
    seed: int = 0  # model init, corpus and evaluation sampling
    n_layer: int = 2  # GPT-2 layers
    n_embd: int = 64  # GPT-2 width (2 heads)
    corpus_size: int = 3000  # warm-up sentences
    p_good: float = 0.2  # probability that a corpus word is drawn from the GOOD pool
    p_bad: float = 0.2  # probability that a corpus word is drawn from the BAD pool (else NEUTRAL)
    response_words: tuple[int, int] = (2, 5)  # (min, max) pool words after the topic in a corpus answer
    sft_steps: int = 300  # warm-up steps
    sft_lr: float = 3e-3  # warm-up AdamW learning rate
    sft_batch: int = 64  # warm-up sentences per step
    min_good: int = 2  # b(y) = 1 iff the answer has at least this many GOOD words
    epsilon: float = 1e-2  # target a (b + epsilon): finite for reverse-KL-type members
    heldout_topics: int = 2  # the last k topics are only used for evaluation
    lr: float = 1e-3  # f-DPG AdamW learning rate
    mode: str = "online"  # "online" (sample the policy) or "offline" (DPG: a frozen proposal, replaced when beaten)
    contexts_per_step: int = 4  # prompts per f-DPG step
    samples_per_context: int = 16  # samples per prompt and step
    max_new_tokens: int = 10  # sampling cap (corpus answers have at most response_words[1] + 2 tokens)
    eval_samples: int = 256  # evaluation samples per held-out prompt and policy
    z_samples: int = 4096  # base samples per held-out prompt for log Z and KL(P || pi)
    resume: bool = False  # resume every training run from its latest checkpoint
    engine: EngineConfig = dataclasses.field(default_factory=_default_engine)  # f-DPG training loop settings

    CHECKS = dict(  # one per field: divmin.engine.validate
        **lm.CORPUS_CHECKS, divergences=Tuple(each=IsDivergence(parse=divergence), min_len=1), seed=Int(ge=0),
        min_good=Int(ge=1), epsilon=Number(gt=0, lt=1), lr=Number(gt=0), mode=FDPGConfig.CHECKS["mode"],
        contexts_per_step=Int(ge=1), samples_per_context=Int(ge=2), max_new_tokens=Int(ge=1), eval_samples=Int(ge=2),
        z_samples=Int(ge=1), resume=Bool(), engine=Instance(EngineConfig),
    )

    def __post_init__(self) -> None:
        validate(self)
        lm.check_corpus_config(self)
        if self.min_good > self.response_words[1]:
            raise ValueError(f"`min_good` must be <= {self.response_words[1]} (the max of `response_words`)")


def _constraint(config: FDPGLMConfig) -> PointwiseConstraint:
    k = config.min_good
    return PointwiseConstraint(lambda texts: [sum(w in _GOOD for w in t.split()) >= k for t in texts],
                               epsilon=config.epsilon)


def _train_one(spec: str, base: torch.nn.Module, tokenizer, contexts: list[str], config: FDPGLMConfig,
               out_dir: Path) -> torch.nn.Module:
    policy = copy.deepcopy(base).requires_grad_(True).train()
    engine = run_engine(config.engine, out_dir / "fdpg" / re.sub(r"[^\w.-]", "_", spec))
    cfg = FDPGConfig(divergence=divergence(spec), lr=config.lr, contexts_per_step=config.contexts_per_step,
                     samples_per_context=config.samples_per_context, max_new_tokens=config.max_new_tokens,
                     mode=config.mode, engine=engine)
    target = EnergyTarget() * _constraint(config)
    trainer = FDPGTrainer(policy, tokenizer, target, base_model=base, contexts=contexts, config=cfg)
    trainer.train(resume=resumable(engine, config.resume))
    return trainer.model.cpu().eval()


@torch.no_grad()
def _draw(model, tokenizer, prompt: torch.Tensor, n: int, config: FDPGLMConfig, seed: int):
    comp = sample_n(model, prompt, n, max_new_tokens=config.max_new_tokens, eos_id=lm.EOS_ID, pad_id=lm.PAD_ID,
                    generator=torch.Generator().manual_seed(seed))
    rows = [t[m & (t != lm.EOS_ID)].tolist() for t, m in zip(comp.tokens, comp.mask)]
    return comp, tokenizer.batch_decode(rows, skip_special_tokens=True)


@torch.no_grad()
def evaluate_policy(policy, base, tokenizer, prompts: list[torch.Tensor], config: FDPGLMConfig) -> dict[str, float]:
    """Monte-Carlo metrics of ``policy`` against the target, averaged over ``prompts``."""
    constraint, rows = _constraint(config), []
    for k, prompt in enumerate(prompts):
        # the target's log Z(x) and KL(P || pi): samples from the base, weights P / a = (b + eps) / Z
        zc, ztexts = _draw(base, tokenizer, prompt, config.z_samples, config, config.seed + 100 + k)
        log_b = constraint(ztexts)
        # the base is the proposal: s - log q = (log a + log b) - log a = log b, formed exactly
        log_z = float(self_normalized_log_z(log_b, torch.zeros_like(log_b)))
        base_z = completion_logps(base, prompt, zc)
        kl_p_pi = is_divergence(completion_logps(policy, prompt, zc), base_z + log_b, divergence="forward_kl",
                                proposal_logps=base_z, log_z=log_z)
        comp, texts = _draw(policy, tokenizer, prompt, config.eval_samples, config, config.seed + k)
        logq, loga = completion_logps(policy, prompt, comp), completion_logps(base, prompt, comp)
        log_p = loga + constraint(texts) - log_z
        words = [t.split() for t in texts]
        rows.append({"alignment": float(constraint.satisfied(texts).float().mean()),
                     "KL(P||pi)": kl_p_pi, "KL(pi||P)": float((logq - log_p).mean()),
                     "KL(pi||base)": float((logq - loga).mean()), "entropy": float(-logq.mean()),
                     "distinct-2": distinct_n(words), "self-BLEU": self_bleu(words, max_samples=100),
                     "length": float(comp.mask.sum(1).float().mean()),
                     "target alignment": float(torch.softmax(log_b.double(), 0)[log_b > math.log(1.5 *
                                                                                          config.epsilon)].sum())})
    return {key: sum(r[key] for r in rows) / len(rows) for key in rows[0]}


def _plot(rows: list[dict], base_row: dict, path: Path) -> Path:
    return points_panels(rows, base_row, path, x_keys={"entropy": "entropy (nats, Monte Carlo)",
                                                       "distinct-2": "distinct-2"},
                         y_key="alignment", ylabel="alignment E_pi[b]", label_key="divergence",
                         reference_label="base a",
                         title="f-DPG on a tiny GPT-2 (held-out prompts): one point per divergence")


@recipe("fdpg-lm", FDPGLMConfig,
        "f-DPG on a warmed-up tiny GPT-2 toward a GDC constraint: alignment, KL both ways and diversity per divergence",
        full_size=("corpus_size=3000", "sft_steps=300", "engine.max_steps=150", "eval_samples=256", "z_samples=4096"))
def run_fdpg_lm(config: FDPGLMConfig, out_dir: Path) -> RecipeResult:
    tokenizer = lm.build_tokenizer()
    c = config
    base, sft_loss = lm.warm_up(tokenizer, out_dir / "warmup", c.engine, seed=c.seed, n_layer=c.n_layer,
                                n_embd=c.n_embd, corpus_size=c.corpus_size, p_good=c.p_good, p_bad=c.p_bad,
                                response_words=c.response_words, steps=c.sft_steps, lr=c.sft_lr, batch=c.sft_batch,
                                resume=c.resume)
    topics = list(lm.TOPICS)
    train_ctx = [lm.prompt_text(t) for t in topics[:-c.heldout_topics]]
    held = [torch.tensor(tokenizer(lm.prompt_text(t), add_special_tokens=False)["input_ids"])
            for t in topics[-c.heldout_topics:]]
    base_row = evaluate_policy(base, base, tokenizer, held, c)
    rows = []
    for spec in c.divergences:
        policy = _train_one(spec, base, tokenizer, train_ctx, c, out_dir)
        m = evaluate_policy(policy, base, tokenizer, held, c)
        rows.append({"divergence": spec, "behaviour": divergence(spec).behaviour, **m})
    plot = _plot(rows, base_row, out_dir / "alignment_vs_diversity.png")
    summary = {"base_alignment": base_row["alignment"], "target_alignment": base_row["target alignment"],
               "base_entropy": base_row["entropy"], "base_distinct2": base_row["distinct-2"],
               "most_aligned": max(rows, key=lambda r: r["alignment"])["divergence"],
               "most_diverse": max(rows, key=lambda r: r["distinct-2"])["divergence"],
               "best_KL(P||pi)": min(rows, key=lambda r: r["KL(P||pi)"])["divergence"], "warmup_loss": sft_loss}
    cols = ["divergence", "behaviour", "alignment", "KL(P||pi)", "KL(pi||P)", "KL(pi||base)", "entropy",
            "distinct-2", "self-BLEU", "length"]
    return RecipeResult(cols, rows, [str(plot)], summary)
