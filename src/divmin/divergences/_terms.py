"""Elementwise terms of the categorical closed form, generic and fast paths.

``F = Q f(P/Q)`` (summing to D) and ``B = Q g(P/Q)`` (the gradient weight, with
``P f'(P/Q) = F - B``), from log-probabilities ``logp``, ``logq`` of any shape.
Zero probabilities (``-inf``) give the exact limits.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from ._base import Divergence


def generic_categorical_terms(div: "Divergence", logp: Tensor, logq: Tensor, with_grad: bool) -> tuple[Tensor, Tensor | None]:
    """Elementwise ``F = Q f(P/Q)`` and, if ``with_grad``, ``B = Q g(P/Q)``; shapes of ``logp``.

    Works for any member from f, g and the perspective: each term is evaluated on the
    side where the ratio is at most 1 (``Q f(r)`` if r <= 1, ``P f*(1/r)`` otherwise).
    """
    # -inf - -inf (both probabilities 0) is the only NaN; call it t = 0, weight exp(-inf) = 0
    t = torch.nan_to_num(logp - logq, nan=0.0, posinf=math.inf, neginf=-math.inf)
    pos = t > 0
    s = -t.abs()
    log_w = torch.where(pos, logp, logq)  # log of the larger probability; -inf only if both are 0
    persp = div.perspective()
    same = persp == div

    def side(fn_self: Tensor, fn_persp: Any) -> Tensor:
        return fn_self if same else torch.where(pos, fn_persp(log_w, s), fn_self)

    f_val = side(div.weighted_f(log_w, s), persp.weighted_f)
    if not with_grad:
        return f_val, None
    g_val = side(div.weighted_g(log_w, s), persp.weighted_g)
    # On the perspective side the roles swap: Q g(r) = P (f*(u) - g*(u)) and P f'(r) = P g*(u).
    b_val = torch.where(pos, f_val - g_val, g_val)
    return f_val, b_val


def weighted_log_diff(log_w: Tensor, diff: Tensor) -> Tensor:
    """``exp(log_w) * diff`` with 0 where the weight is 0 (``diff`` may then be +-inf or NaN)."""
    return torch.where(log_w == -math.inf, 0.0, torch.exp(log_w) * diff)


def kl_terms(logp: Tensor, logq: Tensor, with_grad: bool) -> tuple[Tensor, Tensor | None]:
    """Fast path for forward KL: F = P log(P/Q), B = -P."""
    f_val = weighted_log_diff(logp, logp - logq)
    return f_val, (-torch.exp(logp) if with_grad else None)


def mixture_terms(logp: Tensor, logq: Tensor, beta: float, with_grad: bool) -> tuple[Tensor, Tensor | None]:
    """Fast path for generalized JS: F = b P log(P/M) + (1-b) Q log(Q/M), B = -(1-b) Q log(M/Q)."""
    logm = torch.logaddexp(logp + math.log(beta), logq + math.log1p(-beta))
    lq_m = weighted_log_diff(logq, logq - logm)
    f_val = beta * weighted_log_diff(logp, logp - logm) + (1.0 - beta) * lq_m
    return f_val, ((1.0 - beta) * lq_m if with_grad else None)
