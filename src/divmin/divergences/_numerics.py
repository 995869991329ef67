"""Small log-space helpers shared by the divergence members."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

LOG2 = math.log(2.0)


def piecewise(t: Tensor, neg: Callable[[Tensor], Tensor], pos: Callable[[Tensor], Tensor]) -> Tensor:
    """``neg(t)`` where ``t <= 0`` and ``pos(t)`` where ``t > 0``.

    Each branch only ever sees its own half-line (the input is clamped), so an
    expression that is stable on one side cannot inject inf/NaN (nor NaN gradients)
    from the other side.
    """
    return torch.where(t <= 0, neg(t.clamp(max=0.0)), pos(t.clamp(min=0.0)))


def mul_exp(t: Tensor, v: Tensor) -> Tensor:
    """``exp(t) * v`` with the limit 0 at ``t = -inf`` even when ``|v| = inf``."""
    return torch.where(t == -math.inf, torch.zeros((), dtype=v.dtype, device=v.device), torch.exp(t) * v)


def exprel(x: Tensor) -> Tensor:
    """``expm1(x) / x``, equal to 1 at 0 and accurate near it."""
    small = x.abs() < 1e-3
    xs = torch.where(small, x, torch.ones_like(x))
    series = 1.0 + x * (0.5 + x / 6.0)
    return torch.where(small, series, torch.expm1(xs) / xs)


def log_mix(log_x: Tensor, weight: float) -> Tensor:
    """``log(weight * x + (1 - weight))`` for ``weight`` in [0, 1], from ``log x``."""
    if weight == 0.0:
        return torch.zeros_like(log_x)
    if weight == 1.0:
        return log_x.clone()
    return torch.logaddexp(log_x + math.log(weight), torch.full_like(log_x, math.log1p(-weight)))



def finite_interval(fns: "tuple[Callable[[Tensor], Tensor], ...]", dtype: torch.dtype,
                    headroom: float = 8.0) -> tuple[float, float]:
    """The interval ``[lo, hi]`` around 0 on which every ``fn`` in ``fns`` stays below ``finfo(dtype).max / headroom``.

    Found by bisection on ``log |t|`` on each side (about 64 evaluations each, in ``dtype``); an end is
    ``-inf`` / ``inf`` when the functions are fine up to the largest float. Assumes what holds for the
    g and h of every generator in the registry: their magnitudes only grow away from 0, so the set is
    an interval. ``headroom`` leaves room for a difference of two values times a moderate factor.
    """
    big = torch.finfo(dtype).max
    limit = big / headroom

    def ok(t: float) -> bool:
        x = torch.tensor(t, dtype=dtype)
        return all(bool(fn(x).abs() <= limit) for fn in fns)

    def end(sign: float) -> float:
        if ok(sign * big):
            return sign * math.inf
        lo, hi = -30.0, math.log(big)  # log |t|: ok at e^lo (near 0), not at e^hi
        if not ok(sign * math.exp(lo)):
            return 0.0
        for _ in range(64):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if ok(sign * math.exp(mid)) else (lo, mid)
        return sign * math.exp(lo)

    return end(-1.0), end(1.0)
