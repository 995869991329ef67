"""Elementwise divergence terms as Triton device functions, one per registry member.

Each function maps log-probabilities ``lq = log Q``, ``lp = log P`` (model first) and
their exponentials ``q``, ``p`` of one vocabulary block to

    F = Q f(P/Q)    (sums to D_f(P || Q) over the vocabulary)
    B = Q g(P/Q)    (g = f - r f'; the student-logit gradient is B - Q sum(B))

exactly as :meth:`divmin.Divergence.terms` does, with the same limits
at zero probabilities (``-inf`` logs): a term whose weight is 0 is 0, and a term
that must be infinite (e.g. reverse KL where P = 0 < Q) is ``+inf``. Three
runtime constants ``c0, c1, c2`` carry a member's parameters. Each member's class
names its function and constants in ``triton_terms`` (``_hooks.TritonTerms``); nothing
here maps classes to functions. Everything is float32; the kernel in ``_triton.py``
calls the function it is handed as a compile-time constant, so one kernel serves
every member.

This module imports ``triton``; the package only imports it when Triton is
installed (``pip install "divmin[triton]"``) and a Triton backend is asked for.
"""

from __future__ import annotations

import triton
import triton.language as tl

__all__ = ["alpha_terms", "forward_kl_terms", "jeffreys_terms", "mixture_terms", "neyman_chi2_terms",
           "pearson_chi2_terms", "reverse_kl_terms", "skew_forward_kl_terms", "skew_reverse_kl_terms",
           "softened_forward_kl_terms", "softened_reverse_kl_terms", "squared_hellinger_terms",
           "total_variation_terms"]


@triton.jit
def _wdiff(lw, w, d):
    """``w * d`` with 0 where the weight is 0 (``lw = log w = -inf``), whatever ``d`` is."""
    return tl.where(lw == float("-inf"), 0.0, w * d)


@triton.jit
def _logaddexp(a, b):
    m = tl.maximum(a, b)
    safe = tl.where(m == float("-inf"), 0.0, m)
    return tl.where(m == float("-inf"), m, safe + tl.log(tl.exp(a - safe) + tl.exp(b - safe)))


@triton.jit
def _pq_over_m(lp, lq, lm):
    """``P Q / M`` in log space (bounded when M is a mixture of P and Q); 0 where P or Q is 0."""
    zero = (lp == float("-inf")) | (lq == float("-inf"))
    return tl.where(zero, 0.0, tl.exp(lp + lq - lm))


@triton.jit
def forward_kl_terms(lq, lp, q, p, c0, c1, c2):
    return _wdiff(lp, p, lp - lq), -p


@triton.jit
def reverse_kl_terms(lq, lp, q, p, c0, c1, c2):
    f = _wdiff(lq, q, lq - lp)
    return f, f + q


@triton.jit
def mixture_terms(lq, lp, q, p, c0, c1, c2):
    """Generalized JS with c0 = log b, c1 = log(1 - b), times c2 (js: b = 1/2, c2 = 2).

    M in probability space (one rounding; logaddexp of the logs loses float32 accuracy),
    clamped to the smallest normal number, below which both weights are negligible.
    """
    lm = tl.log(tl.maximum(tl.exp(c0) * p + tl.exp(c1) * q, 1.1754943508222875e-38))
    fq = _wdiff(lq, q, lq - lm)
    return c2 * (tl.exp(c0) * _wdiff(lp, p, lp - lm) + tl.exp(c1) * fq), c2 * tl.exp(c1) * fq


@triton.jit
def skew_forward_kl_terms(lq, lp, q, p, c0, c1, c2):
    """KL(P || M), M = l P + (1 - l) Q, with c0 = log l, c1 = log(1 - l); B = -(1 - l) P Q / M."""
    lm = _logaddexp(lp + c0, lq + c1)
    return _wdiff(lp, p, lp - lm), -tl.exp(c1) * _pq_over_m(lp, lq, lm)


@triton.jit
def skew_reverse_kl_terms(lq, lp, q, p, c0, c1, c2):
    """KL(Q || M), M = (1 - l) P + l Q, with c0 = log(1 - l), c1 = log l; B = F + (1 - l) P Q / M."""
    lm = _logaddexp(lp + c0, lq + c1)
    f = _wdiff(lq, q, lq - lm)
    return f, f + tl.exp(c0) * _pq_over_m(lp, lq, lm)


@triton.jit
def total_variation_terms(lq, lp, q, p, c0, c1, c2):
    half_q = 0.5 * q
    # the sign from the probabilities, as the torch terms take it (near ties)
    return 0.5 * tl.abs(p - q), tl.where(q > p, half_q, tl.where(q < p, -half_q, 0.0))


@triton.jit
def squared_hellinger_terms(lq, lp, q, p, c0, c1, c2):
    d = tl.exp(0.5 * lp) - tl.exp(0.5 * lq)
    return d * d, q - tl.exp(0.5 * (lp + lq))


@triton.jit
def jeffreys_terms(lq, lp, q, p, c0, c1, c2):
    both_zero = (lp == float("-inf")) & (lq == float("-inf"))
    f = tl.where(both_zero, 0.0, (p - q) * (lp - lq))
    return f, q - p + _wdiff(lq, q, lq - lp)


@triton.jit
def _chi2(lp, lq, p, q):
    """``(P - Q)^2 / Q`` and ``Q - P^2/Q``: near P = Q as Q (r - 1)^2, far as P^2/Q - 2P + Q, in log space."""
    t = lp - lq
    d = tl.exp(t) - 1.0
    p2q = tl.exp(2.0 * lp - lq)
    f = tl.where(t > 1.0, p2q - 2.0 * p + q, q * d * d)
    f = tl.where(lp == float("-inf"), q, f)  # f(0) = 1, also when Q = 0
    b = tl.where(lp == float("-inf"), q, q - p2q)
    return f, b


@triton.jit
def pearson_chi2_terms(lq, lp, q, p, c0, c1, c2):
    return _chi2(lp, lq, p, q)


@triton.jit
def neyman_chi2_terms(lq, lp, q, p, c0, c1, c2):
    f, _ = _chi2(lq, lp, q, p)  # (P - Q)^2 / P: Pearson with the roles swapped
    b = tl.where(lq == float("-inf"), 0.0, 2.0 * tl.exp(2.0 * lq - lp) - 2.0 * q)
    return f, b


@triton.jit
def _expm1(x):
    """exp(x) - 1 without cancellation near 0 (Taylor to x^5 for |x| < 0.1, relative error < 2e-8)."""
    taylor = x * (1.0 + x / 2.0 * (1.0 + x / 3.0 * (1.0 + x / 4.0 * (1.0 + x / 5.0))))
    return tl.where(tl.abs(x) < 0.1, taylor, tl.exp(x) - 1.0)


@triton.jit
def _alpha_side(lw, a, am1, t):
    """``w f_a(e^t)`` for t <= 0 with w = exp(lw): Amari's f on the side where the ratio is at most 1.

    f_a(e^t) = ((e^{at} - 1)/a - (e^t - 1)) / (a - 1) for a <= 1/2, and the dual
    ((e^{at} - e^t)/(a - 1) - (e^t - 1)) / a for a > 1/2, so no denominator is small;
    terms that may overflow are formed in log space (a weight that underflows never
    meets an f that overflows). ``am1 = a - 1`` comes from the host: formed here in
    float32 it would round to 0 for a within 6e-8 of 1.
    """
    w = tl.exp(lw)
    at = a * t
    ct = am1 * t
    w_em1_t = w * _expm1(t)
    w_em1_at = tl.where(tl.abs(at) > 1.0, (tl.exp(lw + at) - w) / a, w * _expm1(at) / a)
    lo = (w_em1_at - w_em1_t) / am1
    w_dual = tl.where(tl.abs(ct) > 1.0, (tl.exp(lw + at) - tl.exp(lw + t)) / am1, tl.exp(lw + t) * _expm1(ct) / am1)
    hi = (w_dual - w_em1_t) / a
    return tl.where(lw == float("-inf"), 0.0, tl.where(a <= 0.5, lo, hi))


@triton.jit
def alpha_terms(lq, lp, q, p, c0, c1, c2):
    """Amari alpha with c0 = a, c1 = 1 - a (a not 0 or 1): F = Q f_a(r) for r <= 1, else P f_(1-a)(1/r)."""
    t = lp - lq
    f = tl.where(t > 0.0, _alpha_side(lp, c1, -c0, -t), _alpha_side(lq, c0, -c1, t))
    at = c0 * t
    b = tl.where(tl.abs(at) > 1.0, (q - tl.exp(lq + at)) / c0, -q * _expm1(at) / c0)  # Q (1 - r^a) / a
    return f, tl.where(lq == float("-inf"), tl.where((lp == float("-inf")) | (c1 > 0.0), 0.0, float("-inf")), b)


@triton.jit
def softened_reverse_kl_terms(lq, lp, q, p, c0, c1, c2):
    lm = _logaddexp(lp, lq) - 0.6931471805599453  # M = (P + Q)/2
    return _wdiff(lm, 2.0 * tl.exp(lm), lm - lp), q + _wdiff(lq, q, lm - lp)


@triton.jit
def softened_forward_kl_terms(lq, lp, q, p, c0, c1, c2):
    lm = _logaddexp(lp, lq) - 0.6931471805599453
    return _wdiff(lm, 2.0 * tl.exp(lm), lm - lq), _wdiff(lq, q, lm - lq) - p
