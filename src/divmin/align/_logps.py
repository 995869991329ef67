"""Summed response log-probabilities of causal-LM outputs, with a bounded fp32 footprint."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["sequence_logps"]

_FULL = (torch.float32, torch.float64)


def _check(logits: Tensor, input_ids: Tensor, loss_mask: Tensor) -> None:
    if not isinstance(logits, Tensor) or logits.ndim != 3 or not logits.is_floating_point():
        raise ValueError(f"`logits` must be a floating tensor of shape (B, T, V), got "
                         f"{getattr(logits, 'shape', type(logits).__name__)}")
    batch, length = logits.shape[:2]
    for name, x in (("input_ids", input_ids), ("loss_mask", loss_mask)):
        if not isinstance(x, Tensor) or tuple(x.shape) != (batch, length):
            raise ValueError(f"`{name}` must have shape {(batch, length)} like `logits`' first two dims, "
                             f"got {getattr(x, 'shape', type(x).__name__)}")
    if length < 2:
        raise ValueError(f"`logits` needs at least 2 positions to predict a next token, got T={length}")


def _token_logps(logits: Tensor, targets: Tensor) -> Tensor:
    """log softmax(logits)[target] per position; (b, t, V), (b, t) -> (b, t) in >= float32."""
    dtype = torch.promote_types(logits.dtype, torch.float32)
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1).to(dtype)
    return picked - torch.logsumexp(logits.to(dtype), dim=-1)


def sequence_logps(logits: Tensor, input_ids: Tensor, loss_mask: Tensor) -> Tensor:
    """Sum of next-token log-probabilities over the masked (response) tokens of each row.

    Args:
        logits: (B, T, V) causal-LM outputs; ``logits[:, t]`` predicts ``input_ids[:, t + 1]``.
        input_ids: (B, T) the tokens that were fed in.
        loss_mask: (B, T) 1 where ``input_ids[:, t]`` is a response token whose
            log-probability counts (0 on prompt and padding). ``loss_mask[:, 0]``
            is ignored: the first token has no prediction.

    Returns:
        (B,) ``sum_t loss_mask[:, t] * log p(input_ids[:, t] | input_ids[:, :t])``,
        in float32 (float64 for float64 logits); differentiable w.r.t. ``logits``.

    The log-softmax is formed as ``logit[target] - logsumexp(logits)``, never as a
    full (B, T, V) log-probability tensor. Half-precision logits are upcast to
    float32 one row at a time, so the extra fp32 memory is one (T, V) slice.
    """
    _check(logits, input_ids, loss_mask)
    logits = logits[:, :-1]
    targets = input_ids[:, 1:].long()
    mask = loss_mask[:, 1:].bool()
    if logits.dtype in _FULL:
        per_token = _token_logps(logits, targets)
    else:
        per_token = torch.stack([_token_logps(logits[i : i + 1], targets[i : i + 1])[0]
                                 for i in range(logits.shape[0])])
    return torch.where(mask, per_token, torch.zeros_like(per_token)).sum(-1)
