"""The tiny GPT-2 and its supervised warm-up of the tiny-LM alignment recipes (``fdpo-lm``, ``fdpg-lm``).

One config, nested by both recipes as ``warmup`` (``--set warmup.corpus_size=300``): the model
size, the synthetic corpus of :mod:`.tiny_lm` and the warm-up's steps, learning rate and batch.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ..engine import EngineConfig, Int, Number, Tuple, validate
from . import tiny_lm as lm

__all__ = ["WarmUpConfig", "warm_up"]


@dataclasses.dataclass
class WarmUpConfig:
    n_layer: int = 2  # GPT-2 layers
    n_embd: int = 64  # GPT-2 width (2 heads)
    corpus_size: int = 3000  # warm-up sentences
    p_good: float = 0.2  # probability that a corpus word is drawn from the GOOD pool
    p_bad: float = 0.2  # probability that a corpus word is drawn from the BAD pool (else NEUTRAL)
    response_words: tuple[int, int] = (2, 5)  # (min, max) pool words after the topic in a corpus answer
    steps: int = 300  # warm-up steps (supervised, response tokens only)
    lr: float = 3e-3  # warm-up AdamW learning rate
    batch: int = 64  # warm-up sentences per step

    CHECKS = dict(  # one per field: divmin.engine.validate
        n_layer=Int(ge=1), n_embd=Int(ge=2), corpus_size=Int(ge=1), p_good=Number(ge=0, le=1),
        p_bad=Number(ge=0, le=1), response_words=Tuple((Int(ge=1), Int(ge=1))), steps=Int(ge=1), lr=Number(gt=0),
        batch=Int(ge=1),
    )

    def __post_init__(self) -> None:
        validate(self)
        if self.p_good + self.p_bad > 1:
            raise ValueError("`p_good` + `p_bad` must be <= 1")
        if self.response_words[0] > self.response_words[1]:
            raise ValueError(f"`response_words` must be (min, max) with min <= max, got {self.response_words}")
        if self.n_embd % 2:
            raise ValueError(f"`n_embd` must be even (2 attention heads), got {self.n_embd}")

    def check_cap(self, max_new_tokens: int) -> None:
        """A corpus answer (topic, words, EOS) must fit under the recipe's sampling cap ``max_new_tokens``."""
        if self.response_words[1] + 2 > max_new_tokens:
            raise ValueError(f"`warmup.response_words` max ({self.response_words[1]}) must be <= `max_new_tokens` "
                             f"- 2 ({max_new_tokens - 2})")


def warm_up(config: WarmUpConfig, tokenizer, out_dir: Path, engine: EngineConfig, *, seed: int,
            resume: bool = False) -> tuple[torch.nn.Module, float]:
    """The frozen warmed-up tiny GPT-2 (trained through the engine, :func:`.tiny_lm.warm_up`) and its final loss."""
    c = config
    return lm.warm_up(tokenizer, out_dir, engine, seed=seed, n_layer=c.n_layer, n_embd=c.n_embd,
                      corpus_size=c.corpus_size, p_good=c.p_good, p_bad=c.p_bad, response_words=c.response_words,
                      steps=c.steps, lr=c.lr, batch=c.batch, resume=resume)
