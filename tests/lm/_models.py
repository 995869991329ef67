"""A causal LM whose next-token law is known in closed form: a position-dependent bigram.

``logits[b, t] = table[position_ids[b, t], input_ids[b, t]]``: the next token depends on the
current token and on its *position*, so a sampler that gets left-padded positions wrong
samples from a different, computable law. It keeps a fake KV cache (the number of tokens
seen) to exercise the cached path, or none (``cache=False``) to exercise full recompute.
"""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import torch
from torch import nn


class PositionalBigram(nn.Module):
    def __init__(self, vocab: int = 5, positions: int = 12, scale: float = 1.5, seed: int = 0, cache: bool = True):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.table = nn.Parameter(scale * torch.randn(positions, vocab, vocab, generator=g, dtype=torch.float64))
        self.cache = cache
        self.modes: list[bool] = []  # self.training at every forward

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False, cache=None):
        self.modes.append(self.training)
        if position_ids is None:  # what a Hugging Face model does: 0, 1, ... regardless of padding
            position_ids = torch.arange(input_ids.shape[1]).expand_as(input_ids)
        if cache is not None:
            assert input_ids.shape[1] == 1, "with a cache only the new token is fed"
            assert attention_mask.shape[1] == int(cache) + 1, "the mask covers the cached prefix"
        seen = (0 if cache is None else int(cache)) + input_ids.shape[1]
        logits = self.table[position_ids, input_ids].float()
        return SimpleNamespace(logits=logits, cache=seen if (use_cache and self.cache) else None)


def two_token_law(model: PositionalBigram, last: int, position: int, eos: int, temperature: float = 1.0):
    """{(y1, y2): probability} of two sampled tokens after token ``last`` at ``position`` (y2 None after EOS)."""
    t = model.table.detach() / temperature
    p1 = torch.softmax(t[position, last], -1)
    law = {(eos, None): float(p1[eos])}
    for a, b in itertools.product(range(t.shape[1]), repeat=2):
        if a != eos:
            law[(a, b)] = float(p1[a] * torch.softmax(t[position + 1, a], -1)[b])
    return law
