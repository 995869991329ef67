"""Recipe ``fdpo-lm``: f-DPO on a real (tiny) causal LM, scored by a reward we can compute exactly.

1. Warm-up: a tiny GPT-2 (built from config, see :mod:`.tiny_lm`) is trained by
   supervised next-token prediction on a synthetic corpus of short answers
   ``"tell me about <topic> :" -> "<topic> w1 ... wk [EOS]"``, each word drawn
   from a GOOD, BAD or NEUTRAL pool. The result is the reference policy pi_ref.
2. Preferences: for each training prompt two responses are sampled from
   pi_ref and labelled by Bradley-Terry on the true reward
   R(y) = (#GOOD(y) - #BAD(y)) / #words(y) (``reward_per_word``, the default):
   ``Pr(y1 > y2) = sigmoid(reward_scale * (R1 - R2))``. A per-word reward does not
   pay for length: with the count reward #GOOD - #BAD (``reward_per_word=False``)
   the members that gain most do it by answering at length (at seed 0, alpha 0.5
   ran 83% of its samples into the ``max_new_tokens`` cap, mean length 9.2 words
   against pi_ref's 4.5), so the comparison was about length, not the divergence.
   ``length_penalty`` subtracts ``length_penalty * #words`` from either reward; its
   default 0.05 (0.22 on a reference-length answer) is there because even with a
   per-word reward f-DPO's policies drift to long answers (seed 0 without it: 46-55%
   of the samples of reverse KL, forward KL and alpha 0.5 hit the cap).
   The last ``heldout_topics`` topics never appear in the training pairs; their
   prompts give the eval pairs (for the trainer's ECE) and the sampling evaluation.
3. For every divergence a copy of the SAME warmed-up model is trained with
   :class:`divmin.align.FDPOTrainer` (frozen pi_ref as ``ref_model``).
4. Evaluation: ``samples_per_prompt`` responses per held-out prompt from each
   policy give its mean true reward, the length-controlled reward per word
   ``(#GOOD - #BAD) / #words`` whatever the training reward, the mean length and the
   cap rate (fraction cut at ``max_new_tokens``), distinct-2 (unique / total word bigrams
   per prompt, averaged over prompts), a Monte-Carlo estimate of
   KL(pi || pi_ref) = E_pi[log pi(y|x) - log pi_ref(y|x)] (summed over the
   response tokens, EOS included) and the trainer's eval ECE / accuracy.

Divergences are registry names; ``"alpha:0.5"`` sets a one-parameter member's
parameter (parsed by :func:`divmin.divergence`, which reads spec strings).
Files: ``warmup/`` and ``fdpo/<divergence>/`` (engine logs per run) and
``reward_vs_kl.png``.

Full-size run (``divmin recipes`` shows it): ``divmin run fdpo-lm --out runs/fdpo-lm --full``, that is
``--set warmup.corpus_size=3000 --set warmup.steps=300 --set train_pairs=1024 --set fdpo.engine.max_steps=120
--set samples_per_prompt=128``. Keys: the recipe's own fields, ``warmup.*`` (:class:`._lm_warmup.WarmUpConfig`)
and ``fdpo.*`` (:class:`divmin.align.FDPOConfig`: ``fdpo.beta``, ``fdpo.lr``, ``fdpo.engine.max_steps``...).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from pathlib import Path

import torch

from ..align import FDPOConfig, FDPOTrainer
from ..divergences import divergence
from ..engine import Bool, EngineConfig, Instance, Int, IsDivergence, Number, Tuple, validate
from ..eval import distinct_n
from . import tiny_lm as lm
from ._plots import points_panels
from ._engines import refuse_owned
from ._lm_warmup import WarmUpConfig
from ._lm_warmup import warm_up as _warm_up
from ._registry import RecipeResult, recipe
from ._runs import resumable, run_engine

__all__ = ["FDPOLMConfig", "run_fdpo_lm", "warm_up"]

_ID_TO_WORD = {i: w for w, i in lm.VOCAB.items()}


def _default_fdpo() -> FDPOConfig:
    # the responses are short (prompt 4 tokens, at most max_new_tokens after it): the method's default
    # max_length / max_prompt_length never cut them
    engine = EngineConfig(max_steps=120, log_every=20, progress=True)
    return FDPOConfig(beta=0.1, lr=1e-3, batch_size=32, eval_batch_size=128, engine=engine)


@dataclasses.dataclass
class FDPOLMConfig:
    divergences: tuple[str, ...] = ("reverse_kl", "forward_kl", "js", "alpha:0.5")  # f-DPO members; "name:v" = param
    seed: int = 0  # model init, corpus, preference and evaluation sampling (fdpo.engine.seed drives data order)
    warmup: WarmUpConfig = dataclasses.field(default_factory=WarmUpConfig)  # the reference policy's model and warm-up
    heldout_topics: int = 2  # the last k topics are kept out of the training pairs and used for evaluation
    train_pairs: int = 1024  # training preference pairs (split evenly over the training prompts)
    eval_pairs: int = 128  # held-out preference pairs for the trainer's eval ECE / accuracy
    reward_per_word: bool = True  # R(y) = (#GOOD - #BAD) / #words (no pull to length); False: #GOOD - #BAD
    # Bradley-Terry: Pr(y1 > y2) = sigmoid(reward_scale * (R1 - R2)); 4 makes per-word preferences about as
    # sharp as count preferences on reference-length (4.5-word) answers
    reward_scale: float = 4.0
    length_penalty: float = 0.05  # subtracted per word from R: keeps answers off the max_new_tokens cap
    samples_per_prompt: int = 128  # evaluation samples per held-out prompt and policy
    max_new_tokens: int = 10  # sampling cap (corpus responses have at most warmup.response_words[1] + 2 tokens)
    resume: bool = False  # resume every training run from its latest checkpoint
    # f-DPO settings shared by every divergence (its divergence is set per run from `divergences`); its
    # engine also runs the warm-up (with warmup.steps steps)
    fdpo: FDPOConfig = dataclasses.field(default_factory=_default_fdpo)

    CHECKS = dict(  # one per field: divmin.engine.validate
        divergences=Tuple(each=IsDivergence(parse=divergence, capability="implicit_reward"), min_len=1),
        seed=Int(ge=0), warmup=Instance(WarmUpConfig), heldout_topics=Int(ge=1, le=len(lm.TOPICS) - 1),
        train_pairs=Int(ge=1), eval_pairs=Int(ge=1), reward_per_word=Bool(), reward_scale=Number(gt=0),
        length_penalty=Number(ge=0), samples_per_prompt=Int(ge=1), max_new_tokens=Int(ge=1), resume=Bool(),
        fdpo=Instance(FDPOConfig),
    )

    def __post_init__(self) -> None:
        validate(self)
        self.warmup.check_cap(self.max_new_tokens)
        refuse_owned(self, {"fdpo.divergence": "divergences"})


def warm_up(config: FDPOLMConfig, tokenizer, out_dir: Path) -> tuple[torch.nn.Module, float]:
    """The frozen reference policy (supervised warm-up through the engine) and its final loss."""
    return _warm_up(config.warmup, tokenizer, out_dir / "warmup", config.fdpo.engine, seed=config.seed,
                    resume=config.resume)


# ------------------------------------------------------- preferences, metrics
def _words(ids: list[int]) -> list[str]:
    return [_ID_TO_WORD[i] for i in ids if i != lm.EOS_ID]


def _prompt_ids(tokenizer, topics: list[str]) -> list[list[int]]:
    return [list(tokenizer(lm.prompt_text(t), add_special_tokens=False)["input_ids"]) for t in topics]


def preference_rows(ref: torch.nn.Module, tokenizer, topics: list[str], n_pairs: int, config: FDPOLMConfig,
                    generator: torch.Generator) -> list[dict[str, str]]:
    """``n_pairs`` BT-labelled pairs of pi_ref samples, spread evenly over the prompts of ``topics``."""
    per = math.ceil(n_pairs / len(topics))
    samples = lm.sample_responses(ref, _prompt_ids(tokenizer, topics), 2 * per, config.max_new_tokens, generator)
    rows = []
    for t, topic in enumerate(topics):
        mine = samples[2 * per * t: 2 * per * (t + 1)]
        for a, b in zip(mine[0::2], mine[1::2]):
            wa, wb = _words(a), _words(b)
            p = torch.sigmoid(torch.tensor(config.reward_scale * (_reward(wa, config) - _reward(wb, config))))
            first = bool(torch.rand((), generator=generator) < p)
            chosen, rejected = (wa, wb) if first else (wb, wa)
            rows.append({"prompt": lm.prompt_text(topic), "chosen": " ".join(chosen), "rejected": " ".join(rejected)})
    rows = [rows[i] for i in torch.randperm(len(rows), generator=generator).tolist()]
    return rows[:n_pairs]


def _per_word(words: list[str]) -> float:
    """Length-controlled reward: (#GOOD - #BAD) / #words (0 for an empty answer)."""
    return lm.true_reward(words) / max(1, len(words))


def _reward(words: list[str], config: FDPOLMConfig) -> float:
    """The recipe's true reward: (#GOOD - #BAD) [/ #words if reward_per_word] - length_penalty * #words."""
    base = _per_word(words) if config.reward_per_word else lm.true_reward(words)
    return base - config.length_penalty * len(words)


@torch.no_grad()
def sample_metrics(policy: torch.nn.Module, ref: torch.nn.Module, prompts: list[list[int]], config: FDPOLMConfig
                   ) -> dict[str, float]:
    """Mean true reward, length-controlled reward per word, distinct-2, MC KL(pi || pi_ref), mean length in
    words and the fraction of samples cut at ``max_new_tokens`` (no EOS), over samples from ``policy``."""
    n = config.samples_per_prompt
    gen = torch.Generator().manual_seed(config.seed + 1)  # the same stream for every policy
    samples = lm.sample_responses(policy.eval(), prompts, n, config.max_new_tokens, gen)
    words = [_words(s) for s in samples]
    log_ratio = lm.response_logps(policy, prompts, samples) - lm.response_logps(ref, prompts, samples)
    div = [distinct_n(words[k * n:(k + 1) * n]) for k in range(len(prompts))]
    return {"reward": sum(_reward(w, config) for w in words) / len(words),
            "reward/word": sum(map(_per_word, words)) / len(words), "distinct-2": sum(div) / len(div),
            "KL(pi||ref)": float(log_ratio.double().mean()), "length": sum(map(len, words)) / len(words),
            "cut": sum(s[-1] != lm.EOS_ID for s in samples) / len(samples)}


# --------------------------------------------------------------- f-DPO runs
def _train_one(spec: str, ref: torch.nn.Module, tokenizer, train_rows: list[dict], eval_rows: list[dict],
               config: FDPOLMConfig, out_dir: Path) -> tuple[torch.nn.Module, dict[str, float]]:
    """One f-DPO run from a copy of ``ref``; returns the trained policy and its last logged metrics."""
    policy = copy.deepcopy(ref).requires_grad_(True).train()
    engine = run_engine(config.fdpo.engine, out_dir / "fdpo" / re.sub(r"[^\w.-]", "_", spec))
    fcfg = dataclasses.replace(config.fdpo, divergence=divergence(spec), engine=engine)
    trainer = FDPOTrainer(policy, tokenizer, train_rows, eval_dataset=eval_rows, ref_model=ref, config=fcfg)
    result = trainer.fit(resume=resumable(engine, config.resume))
    return trainer.model.cpu().eval(), result.metrics


def reward_plot(rows: list[dict], ref: dict[str, float], path: Path) -> Path:
    """True reward against MC KL(pi || pi_ref) and against distinct-2: one point per divergence."""
    return points_panels(rows, ref, path, x_keys={"KL(pi||ref)": "KL(pi || pi_ref) (Monte-Carlo)",
                                                  "distinct-2": "distinct-2"},
                         y_key="reward", ylabel="mean true reward",
                         label_key="divergence", reference_label="pi_ref",
                         title="f-DPO on a tiny GPT-2: held-out prompts, one point per divergence")


def _summary(rows: list[dict], ref: dict[str, float], sft_loss: float) -> dict:
    return {
        "most_reward": max(rows, key=lambda r: r["reward"])["divergence"],
        "most_reward_per_word": max(rows, key=lambda r: r["reward/word"])["divergence"],
        "max_cut": max(r["cut"] for r in rows), "ref_reward_per_word": ref["reward/word"],
        "most_diversity": max(rows, key=lambda r: r["distinct-2"])["divergence"],
        "all_beat_reference": all(r["reward"] > ref["reward"] for r in rows),
        "ref_reward": ref["reward"], "ref_distinct2": ref["distinct-2"], "ref_length": ref["length"],
        "ref_cut": ref["cut"],
        "warmup_loss": sft_loss,
    }


@recipe("fdpo-lm", FDPOLMConfig,
        "f-DPO on a warmed-up tiny GPT-2 with a computable reward: reward, diversity and KL per divergence",
        full_size=("warmup.corpus_size=3000", "warmup.steps=300", "train_pairs=1024", "fdpo.engine.max_steps=120",
                   "samples_per_prompt=128"))
def run_fdpo_lm(config: FDPOLMConfig, out_dir: Path) -> RecipeResult:
    tokenizer = lm.build_tokenizer()
    ref, sft_loss = warm_up(config, tokenizer, out_dir)
    topics = list(lm.TOPICS)
    train_topics, held = topics[:-config.heldout_topics], topics[-config.heldout_topics:]
    gen = torch.Generator().manual_seed(config.seed)
    train_rows = preference_rows(ref, tokenizer, train_topics, config.train_pairs, config, gen)
    eval_rows = preference_rows(ref, tokenizer, held, config.eval_pairs, config, gen)
    prompts = _prompt_ids(tokenizer, held)
    ref_metrics = sample_metrics(ref, ref, prompts, config)
    rows = []
    for spec in config.divergences:
        policy, logged = _train_one(spec, ref, tokenizer, train_rows, eval_rows, config, out_dir)
        m = sample_metrics(policy, ref, prompts, config)
        rows.append({"divergence": spec, **m, "reward gain": m["reward"] - ref_metrics["reward"],
                     "ECE": logged["eval/ece"], "eval acc": logged["eval/accuracy"]})
    plot = reward_plot(rows, ref_metrics, out_dir / "reward_vs_kl.png")
    cols = ["divergence", "reward", "reward gain", "reward/word", "distinct-2", "KL(pi||ref)", "length", "cut", "ECE",
            "eval acc"]
    return RecipeResult(cols, rows, [str(plot)], _summary(rows, ref_metrics, sft_loss))
