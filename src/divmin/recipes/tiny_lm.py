"""The tiny-LM recipes' vocabulary, synthetic corpus with a computable reward, and warm-up.

The model and tokenizer come from :mod:`divmin.lm` (built from code, no download). A prompt is ``"tell me about
<topic> :"`` (always 4 tokens); a response is ``<topic>`` followed by a few
words, each drawn from the GOOD, BAD or NEUTRAL pool, and then ``[EOS]``. The
true reward of a response is its number of GOOD words minus its number of BAD
words (:func:`true_reward`), so any sampled text can be scored exactly.

Also here: list-of-ids front ends to :mod:`divmin.lm`'s sampler and
log-probabilities (:func:`sample_responses`, :func:`response_logps`).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..engine import CrossEntropyTask, EngineConfig, Trainer
from ..lm import LMCollator, completion_logps, sample_completions, tiny_gpt2, word_tokenizer
from ._runs import resumable, run_engine

if TYPE_CHECKING:  # annotations only: `divmin recipes` should not wait for transformers to import
    from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

__all__ = ["BAD", "GOOD", "NEUTRAL", "TOPICS", "VOCAB", "build_model", "build_tokenizer", "corpus",
           "prompt_text", "response_logps", "sample_responses", "true_reward", "warm_up"]

SPECIALS = ["[PAD]", "[EOS]", "[UNK]"]
PROMPT_WORDS = ["tell", "me", "about", ":"]
TOPICS = ["cats", "dogs", "birds", "fish", "trees", "rivers", "stars", "clouds", "hills", "roads"]
GOOD = ["great", "kind", "bright", "calm", "happy", "warm"]
BAD = ["awful", "rude", "dull", "grim", "sad", "cold"]
NEUTRAL = ["the", "a", "is", "are", "very", "quite", "really", "often", "it", "they", "and", "some", "many",
           "small", "big", "old"]
VOCAB = {w: i for i, w in enumerate(SPECIALS + PROMPT_WORDS + TOPICS + GOOD + BAD + NEUTRAL)}
PAD_ID, EOS_ID = VOCAB["[PAD]"], VOCAB["[EOS]"]
_GOOD, _BAD = frozenset(GOOD), frozenset(BAD)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """:func:`divmin.lm.word_tokenizer` over VOCAB."""
    return word_tokenizer(VOCAB)


def build_model(seed: int, n_layer: int = 2, n_embd: int = 64, n_head: int = 2, n_positions: int = 32
                ) -> GPT2LMHeadModel:
    """:func:`divmin.lm.tiny_gpt2` over VOCAB (no dropout)."""
    return tiny_gpt2(VOCAB, seed=seed, n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_positions=n_positions,
                     eos_id=EOS_ID, pad_id=PAD_ID)


def prompt_text(topic: str) -> str:
    return f"tell me about {topic} :"


def corpus(n: int, seed: int, p_good: float, p_bad: float, words: tuple[int, int]) -> list[tuple[str, str]]:
    """``n`` (prompt, response) texts; a response is the topic then ``words`` (min, max) pool words."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        topic = rng.choice(TOPICS)
        body = []
        for _ in range(rng.randint(*words)):
            u = rng.random()
            pool = GOOD if u < p_good else BAD if u < p_good + p_bad else NEUTRAL
            body.append(rng.choice(pool))
        out.append((prompt_text(topic), " ".join([topic, *body])))
    return out


def true_reward(words: list[str]) -> float:
    """Number of GOOD words minus number of BAD words."""
    return float(sum(w in _GOOD for w in words) - sum(w in _BAD for w in words))


def _pairs(prompts: list[list[int]], responses: list[list[int]]) -> list[dict[str, list[int]]]:
    """Prompt-major rows: ``len(responses) // len(prompts)`` responses per prompt."""
    n = len(responses) // len(prompts)
    return [{"prompt_ids": prompts[k // n], "completion_ids": r} for k, r in enumerate(responses)]


def sample_responses(model: torch.nn.Module, prompts: list[list[int]], n: int, max_new_tokens: int,
                     generator: torch.Generator) -> list[list[int]]:
    """``n`` ancestral samples (temperature 1) per prompt, prompt-major; each ends with EOS unless cut.

    :func:`divmin.lm.sample_completions` on the left-padded prompts; ``generator``
    may be a CPU generator whatever the model's device.
    """
    batch = LMCollator(PAD_ID)(_pairs(prompts, [[]] * (n * len(prompts))))
    comp = sample_completions(model, batch["prompt_ids"], batch["prompt_mask"], max_new_tokens=max_new_tokens,
                              eos_id=EOS_ID, pad_id=PAD_ID, generator=generator)
    return [t[m].tolist() for t, m in zip(comp.tokens.cpu(), comp.mask.cpu())]


@torch.no_grad()
def response_logps(model: torch.nn.Module, prompts: list[list[int]], responses: list[list[int]],
                   batch_size: int = 256) -> Tensor:
    """(len(responses),) summed log-probs of each response token sequence (as sampled, EOS included).

    ``responses`` are prompt-major with ``len(responses) // len(prompts)`` per prompt.
    """
    rows, out = _pairs(prompts, responses), []
    for s in range(0, len(rows), batch_size):
        b = LMCollator(PAD_ID)(rows[s:s + batch_size])
        lp = b["prompt_ids"].shape[1]
        comp = (b["input_ids"][:, lp:], b["attention_mask"][:, lp:].bool())
        out.append(completion_logps(model, b["prompt_ids"], comp, prompt_mask=b["prompt_mask"]).cpu())
    return torch.cat(out)


# ------------------------------------------------------------------ warm-up
def warm_up(tokenizer, out_dir: Path, engine: EngineConfig, *, seed: int, n_layer: int, n_embd: int,
            corpus_size: int, p_good: float, p_bad: float, response_words: tuple[int, int], steps: int, lr: float,
            batch: int, resume: bool = False) -> tuple[torch.nn.Module, float]:
    """A tiny GPT-2 trained (through the engine) on :func:`corpus`, frozen; and its final loss."""
    enc = lambda text: list(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    rows = [{"prompt_ids": enc(p), "completion_ids": enc(r) + [EOS_ID]}
            for p, r in corpus(corpus_size, seed, p_good, p_bad, response_words)]
    if len({len(r["prompt_ids"]) for r in rows}) > 1:  # the default positions below assume no left padding
        raise ValueError("`tokenizer` must give every corpus prompt the same number of tokens")
    # next-token cross-entropy on the response tokens (EOS included), in divmin.lm's batch layout. Every prompt
    # has the same length (no left padding), so the model's default positions are the layout's on every counted
    # token; leaving `position_ids` out keeps the pad columns' positions, hence the order of the position
    # embedding's gradient sum and the warm-up's numbers, bitwise as they were
    task = CrossEntropyTask(build_model(seed, n_layer=n_layer, n_embd=n_embd), rows, lr=lr, batch_size=batch,
                            collate=LMCollator(PAD_ID), name="lm", inputs=("input_ids", "attention_mask"))
    engine = run_engine(engine, out_dir, max_steps=steps, lr_schedule="cosine", warmup_steps=0, eval_every=None)
    trainer = Trainer(task, engine)
    result = trainer.fit(resume=resumable(engine, resume))
    model = trainer.models["lm"].cpu().requires_grad_(False)
    return model.eval(), float(result.metrics["loss"])
