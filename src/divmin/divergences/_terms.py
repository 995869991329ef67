"""Elementwise terms of the categorical closed form, generic and fast paths.

``F = Q f(P/Q)`` (summing to D) and ``B = Q g(P/Q)`` (the gradient weight, with
``P f'(P/Q) = F - B``), from log-probabilities ``logq``, ``logp`` (model first) of any
shape and, optionally, the probabilities ``q``, ``p`` themselves (the caller usually has them:
``torch.softmax`` gives them more accurately than ``exp(log_softmax)``, and the
gradient needs them anyway). Zero probabilities (``-inf``) give the exact limits.

The fast paths write each term in probability space where that is exact and
cheaper; a product ``0 * inf`` (weight 0, log-ratio infinite) is NaN in IEEE
arithmetic and its limit 0 here, so each such product goes through
:func:`zero_nan_`. Each fast path equals :func:`generic_categorical_terms`
(tests/divergences check every member), and the Triton terms
(``_triton_terms.py``) are the same formulas. Each fast path takes the member first
(:func:`member_terms` makes it the member's ``terms`` method), for its parameters.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from ._base import Divergence

Terms = tuple[Tensor, "Tensor | None"]


def member_terms(fn: Callable[..., Terms]) -> Callable[..., Terms]:
    """``fn(div, logq, logp, with_grad, q, p)`` as a member's ``terms`` method (the hook's signature).

    The fast paths below are written with the short names (model first); a member assigns one
    as its hook: ``terms = _terms.kl_terms``.
    """

    @functools.wraps(fn)
    def terms(self: Any, model_logp: Tensor, target_logp: Tensor, *, with_grad: bool = False,
              model_p: Tensor | None = None, target_p: Tensor | None = None) -> Terms:
        return fn(self, model_logp, target_logp, with_grad, model_p, target_p)

    return terms


def generic_categorical_terms(div: "Divergence", logq: Tensor, logp: Tensor, with_grad: bool) -> Terms:
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


def zero_nan_(x: Tensor) -> Tensor:
    """``x`` with NaN set to 0 in place: the limit of ``w * log-ratio`` at a zero weight w.

    Only valid where a NaN can only come from ``0 * inf`` or ``0 * NaN`` with a zero
    weight (the callers' inputs are rows with a defined softmax; others are refused).
    """
    return x.nan_to_num_(nan=0.0, posinf=math.inf, neginf=-math.inf)


def _prob(log_x: Tensor, x: Tensor | None) -> Tensor:
    return torch.exp(log_x) if x is None else x


def _log_mix_probs(p: Tensor, q: Tensor, beta: float) -> Tensor:
    """``log(beta P + (1 - beta) Q)`` formed in probability space, for 0 < beta < 1.

    More accurate than ``logaddexp`` of the logs in float32 (the sum is rounded once).
    M >= beta P and M >= (1 - beta) Q, so M only underflows where both weights are
    below the smallest normal number: clamping there changes terms of that size only.
    """
    m = torch.mul(p, beta).add_(q, alpha=1.0 - beta)
    return m.clamp_min_(torch.finfo(m.dtype).tiny).log_()


@member_terms
def kl_terms(div: Any, logq: Tensor, logp: Tensor, with_grad: bool, q: Tensor | None, p: Tensor | None) -> Terms:
    """Fast path for forward KL: F = P log(P/Q), B = -P."""
    p = _prob(logp, p)
    f_val = zero_nan_(torch.sub(logp, logq).mul_(p))
    return f_val, (-p if with_grad else None)


@member_terms
def reverse_kl_terms(div: Any, logq: Tensor, logp: Tensor, with_grad: bool, q: Tensor | None,
                     p: Tensor | None) -> Terms:
    """Fast path for reverse KL: F = Q log(Q/P), B = Q (1 - log r) = F + Q."""
    q = _prob(logq, q)
    f_val = zero_nan_(torch.sub(logq, logp).mul_(q))
    return f_val, (f_val + q if with_grad else None)


def _mixture(logq: Tensor, logp: Tensor, beta: float, with_grad: bool, q: Tensor | None,
             p: Tensor | None) -> Terms:
    """Fast path for generalized JS: F = b P log(P/M) + (1-b) Q log(Q/M), B = -(1-b) Q log(M/Q)."""
    p, q = _prob(logp, p), _prob(logq, q)
    m = torch.mul(p, beta).add_(q, alpha=1.0 - beta)
    # log(Q/M) and log(P/M) from the probabilities alone: invariant to the rounding of the
    # log-sum-exps (two callers passing the same distribution as logits or as log-probs agree)
    b_val = zero_nan_(torch.div(q, m).log_().mul_(q)).mul_(1.0 - beta)
    f_val = zero_nan_(torch.div(p, m).log_().mul_(p)).mul_(beta).add_(b_val)
    return f_val, (b_val if with_grad else None)


@member_terms
def generalized_js_terms(div: Any, logq: Tensor, logp: Tensor, with_grad: bool, q: Tensor | None,
                         p: Tensor | None) -> Terms:
    return _mixture(logq, logp, float(div.beta), with_grad, q, p)


@member_terms
def js_terms(div: Any, logq: Tensor, logp: Tensor, with_grad: bool, q: Tensor | None, p: Tensor | None) -> Terms:
    """JS = 2 x generalized JS(1/2)."""
    f_val, b_val = _mixture(logq, logp, 0.5, with_grad, q, p)
    return f_val.mul_(2.0), (None if b_val is None else b_val * 2.0)


@member_terms
def total_variation_terms(div: Any, logq: Tensor, logp: Tensor, with_grad: bool, q: Tensor | None,
                          p: Tensor | None) -> Terms:
    """Fast path for total variation: F = |P - Q|/2, B = Q sign(Q - P)/2.

    The sign comes from the probabilities, not from the log-ratio: in float32 the
    log-probabilities carry an absolute error of ~1e-6 (|log P| of ~10), which flips
    the sign of near ties that the probabilities still resolve.
    """
    p, q = _prob(logp, p), _prob(logq, q)
    d = q - p
    f_val = d.abs().mul_(0.5)
    return f_val, (torch.sign(d).mul_(q).mul_(0.5) if with_grad else None)


@member_terms
def hellinger_terms(div: Any, logq: Tensor, logp: Tensor, with_grad: bool, q: Tensor | None,
                    p: Tensor | None) -> Terms:
    """Fast path for squared Hellinger: F = (sqrt P - sqrt Q)^2, B = Q - sqrt(P Q)."""
    p, q = _prob(logp, p), _prob(logq, q)
    sp, sq = p.sqrt(), q.sqrt()
    f_val = torch.sub(sp, sq).square_()
    return f_val, (torch.addcmul(q, sp, sq, value=-1.0) if with_grad else None)


@member_terms
def jeffreys_terms(div: Any, logq: Tensor, logp: Tensor, with_grad: bool, q: Tensor | None,
                   p: Tensor | None) -> Terms:
    """Fast path for Jeffreys: F = (P - Q) log(P/Q), B = Q - P + Q log(Q/P)."""
    p, q = _prob(logp, p), _prob(logq, q)
    t = logp - logq
    f_val = zero_nan_(torch.sub(p, q).mul_(t))
    if not with_grad:
        return f_val, None
    return f_val, zero_nan_(t.mul_(q)).neg_().add_(q).sub_(p)


def _chi2(logx: Tensor, logy: Tensor, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """``(X - Y)^2 / Y`` and ``X^2 / Y`` elementwise, from logs and probabilities.

    Near X = Y as Y (X/Y - 1)^2 (no cancellation), far (log X/Y > 1) as X^2/Y - 2X + Y with
    X^2/Y formed in log space, so it overflows only where the term itself does.
    """
    t = logx - logy
    x2y = torch.exp(2.0 * logx - logy)
    near = torch.expm1(t).square_().mul_(y)
    far = torch.add(y, x, alpha=-2.0).add_(x2y)
    # X = 0: the term is Y (also where Y = 0, where t is NaN)
    return torch.where(logx == -math.inf, y, torch.where(t > 1.0, far, near)), x2y


@member_terms
def chi2_terms(div: Any, logq: Tensor, logp: Tensor, with_grad: bool, q: Tensor | None,
               p: Tensor | None) -> Terms:
    """Fast path for Pearson chi^2: F = (P - Q)^2 / Q, B = Q - P^2/Q."""
    p, q = _prob(logp, p), _prob(logq, q)
    f_val, p2q = _chi2(logp, logq, p, q)
    return f_val, (torch.where(logp == -math.inf, q, q - p2q) if with_grad else None)


@member_terms
def neyman_terms(div: Any, logq: Tensor, logp: Tensor, with_grad: bool, q: Tensor | None,
                 p: Tensor | None) -> Terms:
    """Fast path for Neyman chi^2: F = (P - Q)^2 / P (Pearson's with the roles swapped), B = 2 Q^2/P - 2 Q."""
    p, q = _prob(logp, p), _prob(logq, q)
    f_val, q2p = _chi2(logq, logp, q, p)
    if not with_grad:
        return f_val, None
    return f_val, torch.where(logq == -math.inf, 0.0, q2p.sub_(q).mul_(2.0))


@member_terms
def skew_terms(div: Any, logq: Tensor, logp: Tensor, with_grad: bool, q: Tensor | None, p: Tensor | None) -> Terms:
    """Fast path for DistiLLM's skew KL, KL(P || M) with M = lam P + (1 - lam) Q: F = P log(P/M), B = -(1-lam) P Q/M.

    ``log M`` by ``logaddexp`` of the logs: lam may be 0, where M = Q can underflow
    while P does not.
    """
    lam = float(div.skew)
    p, q = _prob(logp, p), _prob(logq, q)
    logm = torch.logaddexp(logp + log0(lam), logq + math.log1p(-lam))
    f_val = zero_nan_(torch.sub(logp, logm).mul_(p))
    if not with_grad:
        return f_val, None
    pq_m = torch.where((logp == -math.inf) | (logq == -math.inf), 0.0, torch.exp(logp + logq - logm))
    return f_val, pq_m.mul_(-(1.0 - lam))


@member_terms
def skew_reverse_terms(div: Any, logq: Tensor, logp: Tensor, with_grad: bool, q: Tensor | None,
                       p: Tensor | None) -> Terms:
    """Fast path for skew reverse KL, KL(Q || M) with M = (1 - lam) P + lam Q: F = Q log(Q/M), B = F + (1-lam) P Q/M."""
    lam = float(div.skew)
    p, q = _prob(logp, p), _prob(logq, q)
    logm = torch.logaddexp(logp + math.log1p(-lam), logq + log0(lam))
    f_val = zero_nan_(torch.sub(logq, logm).mul_(q))
    if not with_grad:
        return f_val, None
    pq_m = torch.where((logp == -math.inf) | (logq == -math.inf), 0.0, torch.exp(logp + logq - logm))
    return f_val, pq_m.mul_(1.0 - lam).add_(f_val)


def _softened(logq: Tensor, logp: Tensor, reverse: bool, with_grad: bool, q: Tensor | None,
              p: Tensor | None) -> Terms:
    """Fast paths for the softened KLs with M = (P + Q)/2.

    reverse: 2 KL(M || P), F = 2 M log(M/P), B = Q + Q log(M/P);
    forward: 2 KL(M || Q), F = 2 M log(M/Q), B = Q log(M/Q) - P.
    """
    p, q = _prob(logp, p), _prob(logq, q)
    logm = _log_mix_probs(p, q, 0.5)
    d = torch.sub(logm, logp if reverse else logq)  # log(M/P) or log(M/Q)
    f_val = zero_nan_(torch.add(p, q).mul_(d))  # 2 M = P + Q
    if not with_grad:
        return f_val, None
    qd = zero_nan_(d.mul_(q))
    return f_val, (qd.add_(q) if reverse else qd.sub_(p))


@member_terms
def softened_reverse_terms(div: Any, logq: Tensor, logp: Tensor, with_grad: bool, q: Tensor | None,
                           p: Tensor | None) -> Terms:
    return _softened(logq, logp, True, with_grad, q, p)


@member_terms
def softened_forward_terms(div: Any, logq: Tensor, logp: Tensor, with_grad: bool, q: Tensor | None,
                           p: Tensor | None) -> Terms:
    return _softened(logq, logp, False, with_grad, q, p)


def log0(x: float) -> float:
    """``log x``, ``-inf`` at 0 (a mixture weight of 0)."""
    return math.log(x) if x > 0 else -math.inf
