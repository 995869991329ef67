"""Exponential moving average of a model's weights, shared by every method that keeps one (f-distill, DiDi-Instruct).

    theta_ema <- decay * theta_ema + (1 - decay) * theta      (parameters)
    b_ema     <- b                                             (buffers: running statistics, masks, tables)

Buffers are copied rather than averaged: they are not trained (a BatchNorm's running mean is
already an average, a lookup table or step counter must match the weights it goes with).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["ema_copy", "ema_update"]


def ema_copy(model: nn.Module) -> nn.Module:
    """A frozen deep copy of ``model`` (``requires_grad`` off) to start an EMA from.

    >>> ema = ema_copy(nn.Linear(2, 1))
    >>> any(p.requires_grad for p in ema.parameters())
    False
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be an nn.Module, got {type(model).__name__}")
    return copy.deepcopy(model).requires_grad_(False)


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, *, decay: float) -> None:
    """Move ``ema`` towards ``model`` in place: parameters by ``lerp`` with weight 1 - ``decay``, buffers copied.

    ``ema`` and ``model`` must have the same architecture (parameters and buffers in the same
    order and shapes); ``decay`` in [0, 1] (0: ``ema`` becomes ``model``, 1: it never moves).

    >>> ema, model = nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)
    >>> with torch.no_grad():
    ...     _ = ema.weight.fill_(0.0), model.weight.fill_(1.0)
    >>> ema_update(ema, model, decay=0.9)
    >>> round(float(ema.weight), 6)
    0.1
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"`decay` must be in [0, 1], got {decay}")
    pairs = (("parameters", list(ema.parameters()), list(model.parameters())),
             ("buffers", list(ema.buffers()), list(model.buffers())))
    for kind, mine, theirs in pairs:
        if len(mine) != len(theirs) or any(a.shape != b.shape for a, b in zip(mine, theirs)):
            raise ValueError(f"`ema` and `model` must have the same {kind} (number and shapes)")
    for p_ema, p in zip(pairs[0][1], pairs[0][2]):
        p_ema.lerp_(p.detach(), 1.0 - decay)
    for b_ema, b in zip(pairs[1][1], pairs[1][2]):
        b_ema.copy_(b)
