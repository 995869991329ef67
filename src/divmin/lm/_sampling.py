"""Ancestral sampling from a causal LM, reproducible from a given ``torch.Generator``.

Every method that samples from a language model does it here: f-DPG draws
from its policy (or proposal), on-policy distillation (GKD, Agarwal et al.
2024) from the student, sequence-level KD from the teacher. Each token is drawn
from ``softmax(logits / temperature)`` of the model itself (no top-k / top-p:
the estimators need samples from the model's own distribution) with an explicit
generator, never the global RNG: the engine re-seeds ``ctx.generator`` from
(seed, process, step, micro-step), so samples differ across DDP processes and
are replayed exactly after a resume.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from ._logps import _logits, _model_device, check_model_ids

__all__ = ["Completions", "sample_completions", "sample_n"]


class Completions(NamedTuple):
    """Sampled completions (a ``(tokens, mask)`` pair, as :func:`~divmin.lm.completion_logps` takes).

    ``tokens``: (B, T) long, ``pad_id`` after each row's first EOS, T <= max_new_tokens.
    ``mask``: (B, T) bool, True on the tokens that count (up to and including the first EOS).
    """

    tokens: Tensor
    mask: Tensor


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_args(model: Any, max_new_tokens: Any, eos_id: Any, pad_id: Any, generator: Any, temperature: Any) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    if not _is_int(max_new_tokens) or max_new_tokens < 1:
        raise ValueError(f"`max_new_tokens` must be an int >= 1, got {max_new_tokens!r}")
    for name, value in (("eos_id", eos_id), ("pad_id", pad_id)):
        if not _is_int(value) or value < 0:
            raise ValueError(f"`{name}` must be an int >= 0, got {value!r}")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"`generator` must be a torch.Generator (e.g. the engine's ctx.generator), "
                        f"got {type(generator).__name__}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
            math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"`temperature` must be a finite number > 0, got {temperature!r}")


def _check_prompts(prompt_ids: Any, prompt_mask: Any) -> Tensor:
    """The (B, Lp) long attention mask of left-padded prompts, checked."""
    if not isinstance(prompt_ids, Tensor) or prompt_ids.dim() != 2 or prompt_ids.shape[1] < 1 \
            or prompt_ids.shape[0] < 1 or prompt_ids.dtype.is_floating_point or prompt_ids.dtype == torch.bool:
        raise ValueError("`prompt_ids` must be a (B, Lp) integer tensor with B, Lp >= 1, got "
                         f"{getattr(prompt_ids, 'dtype', type(prompt_ids).__name__)} "
                         f"{tuple(getattr(prompt_ids, 'shape', ()))}")
    if prompt_mask is None:
        return torch.ones_like(prompt_ids, dtype=torch.long)
    if not isinstance(prompt_mask, Tensor) or prompt_mask.shape != prompt_ids.shape:
        raise ValueError(f"`prompt_mask` must have the shape of `prompt_ids` {tuple(prompt_ids.shape)}")
    mask = prompt_mask.long()
    # left padding: each row is 0...0 1...1 and ends on a real token (the one the next token follows)
    if bool(((mask != 0) & (mask != 1)).any()) or bool((mask[:, 1:] < mask[:, :-1]).any()) \
            or bool((mask[:, -1] != 1).any()):
        raise ValueError("`prompt_mask` must be 0/1 and left-padded (0...0 1...1 per row, last column 1)")
    return mask


def _draw(logits: Tensor, temperature: float, generator: torch.Generator) -> Tensor:
    """(B,) one token per row from softmax(logits / temperature), drawn on the generator's device."""
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if probs.device != generator.device:  # e.g. a CPU generator for a model on GPU
        probs = probs.to(generator.device)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1).to(logits.device)


def _returned_cache(out: Any) -> dict[str, Any]:
    """The model's KV cache as the keyword to pass it back with; {} when it returned none.

    transformers >= 5 names it ``cache`` (``past_key_values`` is a deprecated alias), older
    versions ``past_key_values``: it goes back under the name it came out with.
    """
    for name in ("cache", "past_key_values"):
        if hasattr(out, name):  # checked in this order: the 5.x alias warns when read
            value = getattr(out, name)
            return {} if value is None else {name: value}
    return {}


def _ancestral(model: nn.Module, ids: Tensor, att: Tensor, max_new_tokens: int, eos_id: int, pad_id: int,
               generator: torch.Generator, temperature: float) -> Tensor:
    """(B, T) raw sampled tokens (``pad_id`` after EOS), T <= max_new_tokens; with the KV cache if any."""
    pos = (att.cumsum(1) - 1).clamp(min=0)  # left padding: positions restart at each row's first real token
    nxt_pos = pos[:, -1:] + 1
    tokens = torch.full((ids.shape[0], max_new_tokens), pad_id, dtype=torch.long, device=ids.device)
    done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
    cache, feed, feed_pos = {}, ids, pos
    for t in range(max_new_tokens):
        out = model(input_ids=feed, attention_mask=att, position_ids=feed_pos, use_cache=True, **cache)
        cache = _returned_cache(out)
        nxt = _draw(_logits(out)[:, -1], temperature, generator)
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        tokens[:, t] = nxt
        done |= nxt == eos_id
        if bool(done.all()):
            return tokens[:, :t + 1]
        ids, att = torch.cat([ids, nxt[:, None]], 1), torch.cat([att, torch.ones_like(att[:, :1])], 1)
        pos = torch.cat([pos, nxt_pos + t], 1)
        # with a cache only the new token is fed (the mask still covers the cached prefix); else everything
        feed, feed_pos = (nxt[:, None], pos[:, -1:]) if cache else (ids, pos)
    return tokens


def sample_completions(model: nn.Module, prompt_ids: Tensor, prompt_mask: Tensor | None = None, *,
                       max_new_tokens: int, eos_id: int, pad_id: int, generator: torch.Generator,
                       temperature: float = 1.0) -> Completions:
    """One ancestral sample per (left-padded) prompt; a row stops at its first EOS.

    Args:
        model: a causal LM called as ``model(input_ids=, attention_mask=, position_ids=,
            use_cache=True[, cache= or past_key_values=])`` returning ``.logits`` (B, T, V)
            and, optionally, a KV cache as ``.cache`` (transformers >= 5) or
            ``.past_key_values`` (then only new tokens are fed; without one every
            step recomputes the whole prefix). Put in eval mode while
            sampling (no dropout) and restored to its training mode after.
        prompt_ids: (B, Lp) prompts, left-padded (Lp >= 1).
        prompt_mask: (B, Lp) 1 on real tokens (0...0 1...1 per row); None: no padding.
        max_new_tokens: length cap; rows without EOS by then are kept as they are.
        eos_id / pad_id: the stop token and the filler after it.
        generator: the source of randomness (e.g. ``ctx.generator`` of the engine).
            Tokens are drawn on its device, so a CPU generator works with a GPU model.
        temperature: the logits are divided by it before the softmax.

    Returns:
        :class:`Completions` on the model's device: (B, T) tokens and their mask,
        True through the first EOS. The same generator state gives the same samples.

    >>> from divmin.lm import tiny_gpt2
    >>> model = tiny_gpt2(8, n_layer=1, n_embd=8)
    >>> prompts, mask = torch.tensor([[0, 5, 6], [4, 5, 6]]), torch.tensor([[0, 1, 1], [1, 1, 1]])
    >>> out = sample_completions(model, prompts, mask, max_new_tokens=4, eos_id=1, pad_id=0,
    ...                          generator=torch.Generator().manual_seed(0))
    >>> out.tokens.shape[0], out.tokens.shape[1] <= 4, out.mask.dtype
    (2, True, torch.bool)
    """
    _check_args(model, max_new_tokens, eos_id, pad_id, generator, temperature)
    att = _check_prompts(prompt_ids, prompt_mask)
    check_model_ids(model, prompt_ids, "prompt_ids", new_tokens=max_new_tokens)
    device = _model_device(model, prompt_ids.device)
    ids, att = prompt_ids.to(device=device, dtype=torch.long), att.to(device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            tokens = _ancestral(model, ids, att, max_new_tokens, eos_id, pad_id, generator, float(temperature))
    finally:
        model.train(was_training)
    seen = torch.cumsum((tokens == eos_id).int(), dim=1)
    mask = (seen == 0) | ((seen == 1) & (tokens == eos_id))  # through the first EOS, not the pads after it
    return Completions(tokens, mask)


def sample_n(model: nn.Module, prompt: Tensor, n: int, *, max_new_tokens: int, eos_id: int, pad_id: int,
             generator: torch.Generator, temperature: float = 1.0) -> Completions:
    """``n`` completions of one ``prompt`` ((Lp,) token ids): :func:`sample_completions` on n copies of it.

    >>> from divmin.lm import tiny_gpt2
    >>> out = sample_n(tiny_gpt2(8, n_layer=1, n_embd=8), torch.tensor([2, 3]), 5, max_new_tokens=3, eos_id=1,
    ...                pad_id=0, generator=torch.Generator().manual_seed(0))
    >>> out.tokens.shape[0]
    5
    """
    if not isinstance(prompt, Tensor) or prompt.dim() != 1 or prompt.numel() < 1:
        raise ValueError("`prompt` must be a non-empty 1-D tensor of token ids")
    if not _is_int(n) or n < 1:
        raise ValueError(f"`n` must be an int >= 1, got {n!r}")
    return sample_completions(model, prompt.repeat(n, 1), None, max_new_tokens=max_new_tokens, eos_id=eos_id,
                              pad_id=pad_id, generator=generator, temperature=temperature)
