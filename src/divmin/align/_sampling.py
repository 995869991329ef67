"""Ancestral sampling from a causal LM and the exact log-probabilities of what was sampled.

Sampling draws from ``ctx.generator``-style ``torch.Generator`` s (so runs are
reproducible and resumable), at temperature 1 (f-DPG's estimator needs samples
from the policy itself), with the model's KV cache when it returns one.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from ._logps import sequence_logps

__all__ = ["Completions", "completion_logps", "sample_completions"]


class Completions(NamedTuple):
    tokens: Tensor  # (n, T) sampled tokens, ``pad_id`` after the first EOS
    mask: Tensor  # (n, T) bool: the tokens that count (up to and including the first EOS)


@torch.no_grad()
def sample_completions(model: nn.Module, prompt: Tensor, n: int, max_new_tokens: int, *, eos_id: int, pad_id: int,
                       generator: torch.Generator | None = None) -> Completions:
    """``n`` completions of one ``prompt`` ((Lp,) token ids, Lp >= 1); a row stops at EOS.

    Rows that reach ``max_new_tokens`` without EOS are kept as they are (the
    sample space is then sequences of at most that length).
    """
    if prompt.dim() != 1 or prompt.numel() < 1:
        raise ValueError("`prompt` must be a non-empty 1-D tensor of token ids")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    ids = prompt.to(device).repeat(n, 1)
    tokens = torch.full((n, max_new_tokens), pad_id, dtype=torch.long, device=device)
    done = torch.zeros(n, dtype=torch.bool, device=device)
    past, feed = None, ids
    for t in range(max_new_tokens):
        att = torch.ones(ids.shape, dtype=torch.long, device=device)  # covers the cached prefix too
        out = model(input_ids=feed, attention_mask=att, past_key_values=past, use_cache=True) if past is not None \
            else model(input_ids=feed, attention_mask=att, use_cache=True)
        past = getattr(out, "past_key_values", None)
        probs = torch.softmax(out.logits[:, -1].float(), dim=-1)
        nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        tokens[:, t] = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        done |= nxt == eos_id
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        feed = nxt[:, None] if past is not None else ids
        if bool(done.all()):
            tokens = tokens[:, :t + 1]
            break
    model.train(was_training)
    first_eos = torch.cumsum((tokens == eos_id).int(), dim=1)
    mask = (first_eos == 0) | ((first_eos == 1) & (tokens == eos_id))
    return Completions(tokens, mask)


def completion_logps(model: nn.Module, prompt: Tensor, completions: Completions) -> Tensor:
    """(n,) summed log-probabilities of each completion given ``prompt`` (differentiable)."""
    n, length = completions.tokens.shape
    device = completions.tokens.device
    ids = torch.cat([prompt.to(device).repeat(n, 1), completions.tokens], dim=1)
    loss_mask = torch.cat([torch.zeros(n, prompt.numel(), dtype=torch.bool, device=device), completions.mask], 1)
    attention = torch.cat([torch.ones(n, prompt.numel(), dtype=torch.long, device=device),
                           completions.mask.long()], 1)
    logits = model(input_ids=ids, attention_mask=attention).logits
    return sequence_logps(logits, ids, loss_mask)
