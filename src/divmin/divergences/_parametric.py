"""Members of the f-divergence family with a parameter, and mixture-based members.

Conventions of other sources, mapped to ours (P target, Q model, r = P/Q):

* TRL GKD's ``generalized_jsd_loss(beta)`` is ``generalized_js(beta=beta)`` with
  P the teacher; TRL special-cases beta = 0 / 1 to forward / reverse KL, which
  are *not* limits of the mixture family (the mixture divergence vanishes there).
* DistiLLM's skew KL ``KL(p || l p + (1-l) q)`` is ``skew_forward_kl(skew=l)`` and
  its skew reverse KL ``KL(q || (1-l) p + l q)`` is ``skew_reverse_kl(skew=l)``.
* Amari's alpha-divergence ``(r^a - a r - (1-a)) / (a (a-1))`` is ``alpha(alpha=a)``;
  a -> 1 gives forward KL, a -> 0 reverse KL (f differs from theirs by c (r - 1),
  which leaves D unchanged and shifts g by a constant). The f-DPO paper's
  alpha-divergence, a regulariser ``E_pi_ref[f(pi/pi_ref)]``, is our perspective;
  its score ``(1 - u^-a)/a`` with u = pi/pi_ref is our ``g(pi_ref/pi)`` for
  ``alpha(alpha=a)``; TRL's ``f_alpha_divergence_coef`` is 1 - a (since 2025).
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor

from ._base import Divergence, register
from ._hooks import TritonTerms, kernel_terms
from ._numerics import LOG2, log_mix, mul_exp, piecewise
from . import _terms
from ._terms import log0

__all__ = [
    "Alpha",
    "GeneralizedJS",
    "SoftenedReverseKL",
    "SoftenedForwardKL",
    "SkewForwardKL",
    "SkewReverseKL",
]


def _check_real(name: str, value: object, lo: float, hi: float, *, lo_open: bool, hi_open: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number, got {type(value).__name__}")
    v = float(value)
    below = v <= lo if lo_open else v < lo
    above = v >= hi if hi_open else v > hi
    if not math.isfinite(v) or below or above:
        interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        raise ValueError(f"`{name}` must lie in {interval}, got {value!r}")


def _em1(a: float, t: Tensor) -> Tensor:
    """``(r^a - 1)/a`` from t = log r, exact through a = 0 (where it is t)."""
    return t if a == 0.0 else torch.expm1(a * t) / a


def _exp_em1(a: float, t: Tensor) -> Tensor:
    """``r (r^(a-1) - 1)/(a - 1) = (r^a - r)/(a - 1)`` for t = log r <= 0, exact through a = 1."""
    c = a - 1.0
    if c == 0.0:
        return mul_exp(t, t)
    ct = c * t
    far = (torch.exp(a * t) - torch.exp(t)) / c  # |c t| > 1: no cancellation, no inf * 0
    near = torch.exp(t) * torch.expm1(ct.clamp(-1.0, 1.0)) / c
    return torch.where(ct.abs() > 1.0, far, near)


def _alpha_f_neg(a: float, t: Tensor) -> Tensor:
    """Amari's f_a(e^t) for t <= 0, without cancellation for any a."""
    if a <= 0.5:  # (r^a - 1)/a - (r - 1), over a - 1: no small denominator
        return (_em1(a, t) - torch.expm1(t)) / (a - 1.0)
    # a > 1/2: the dual form r f_{1-a}(1/r), whose denominator a is >= 1/2
    return (_exp_em1(a, t) - torch.expm1(t)) / a


def _mixture_weights(div: "GeneralizedJS") -> tuple[float, float, float]:
    """The mixture kernel's constants: log beta, log(1 - beta) and the scale 1."""
    return log0(float(div.beta)), log0(1.0 - float(div.beta)), 1.0


@register("alpha")
@dataclasses.dataclass(frozen=True)
class Alpha(Divergence):
    """Amari alpha-divergence: ``f(r) = (r^a - a r - (1 - a)) / (a (a - 1))``.

    g(r) = (1 - r^a)/a, h(r) = r^a. Continuous in a: a = 1 is forward KL, a = 0
    reverse KL (both accepted), a = 1/2 is twice squared Hellinger; its
    perspective is ``alpha(1 - a)``. See the module docstring for the f-DPO / TRL
    conventions.
    """

    alpha: float = 0.5

    def __post_init__(self) -> None:
        _check_real("alpha", self.alpha, -math.inf, math.inf, lo_open=True, hi_open=True)

    def f_nonpos(self, s: Tensor) -> Tensor:
        return _alpha_f_neg(float(self.alpha), s)

    def f(self, log_r: Tensor) -> Tensor:
        a = float(self.alpha)
        return piecewise(log_r, self.f_nonpos, lambda t: torch.exp(t) * _alpha_f_neg(1.0 - a, -t))

    def g(self, log_r: Tensor) -> Tensor:
        return -_em1(float(self.alpha), log_r)

    def h(self, log_r: Tensor) -> Tensor:
        a = float(self.alpha)
        return torch.ones_like(log_r) if a == 0.0 else torch.exp(a * log_r)

    def log_h(self, log_r: Tensor) -> Tensor:
        return float(self.alpha) * log_r

    # For a < 0, f(e^s) ~ e^{a s} blows up as s -> -inf: form the weighted term in log
    # space there so a weight underflowing to 0 never multiplies an overflowed f.
    def weighted_f(self, log_w: Tensor, s: Tensor) -> Tensor:
        a = float(self.alpha)
        if a >= 0.0:
            return super().weighted_f(log_w, s)
        w = torch.exp(log_w)
        far = ((torch.exp(log_w + a * s) - w) / a - w * torch.expm1(s)) / (a - 1.0)
        return torch.where(a * s > 30.0, far, super().weighted_f(log_w, s))

    def weighted_g(self, log_w: Tensor, s: Tensor) -> Tensor:
        a = float(self.alpha)
        if a >= 0.0:
            return super().weighted_g(log_w, s)
        far = -(torch.exp(log_w + a * s) - torch.exp(log_w)) / a
        return torch.where(a * s > 30.0, far, super().weighted_g(log_w, s))

    def perspective(self) -> Divergence:
        return Alpha(alpha=1.0 - float(self.alpha))

    def triton_terms(self) -> TritonTerms:
        """Amari's terms with constants (a, 1 - a); forward / reverse KL's at a = 1 / 0, where they are those."""
        from ._triton_terms import alpha_terms, forward_kl_terms, reverse_kl_terms

        a = float(self.alpha)
        if a in (0.0, 1.0):
            return TritonTerms(forward_kl_terms if a == 1.0 else reverse_kl_terms)
        return TritonTerms(alpha_terms, (a, 1.0 - a, 0.0))  # 1 - a in float64: the kernel never subtracts parameters


@register("generalized_js")
@dataclasses.dataclass(frozen=True)
class GeneralizedJS(Divergence):
    """Generalized JS (TRL GKD): ``beta KL(P || M) + (1 - beta) KL(Q || M)``, ``M = beta P + (1 - beta) Q``.

    ``f(r) = beta r log r - m(r) log m(r)`` with ``m(r) = beta r + 1 - beta``;
    g(r) = -(1 - beta) log m(r); h(r) = beta (1 - beta) r / m(r). beta = 1/2 is
    half of ``js``; the perspective is ``generalized_js(1 - beta)``.
    """

    beta: float = 0.5

    terms = _terms.generalized_js_terms
    triton_terms = kernel_terms("mixture_terms", _mixture_weights)

    def __post_init__(self) -> None:
        _check_real("beta", self.beta, 0.0, 1.0, lo_open=True, hi_open=True)

    def f_nonpos(self, s: Tensor) -> Tensor:
        b = float(self.beta)
        m = log_mix(s, b)
        return b * mul_exp(s, s) - torch.exp(m) * m

    def f(self, log_r: Tensor) -> Tensor:
        b = float(self.beta)

        def pos(t: Tensor) -> Tensor:  # b r (t - m) - (1 - b) m, with t - m bounded
            val = -b * torch.exp(t) * log_mix(-t, 1.0 - b) - (1.0 - b) * log_mix(t, b)
            return torch.where(t == math.inf, t, val)

        return piecewise(log_r, self.f_nonpos, pos)

    def g(self, log_r: Tensor) -> Tensor:
        b = float(self.beta)
        return -(1.0 - b) * log_mix(log_r, b)

    def h(self, log_r: Tensor) -> Tensor:
        b = float(self.beta)
        return b * (1.0 - b) * torch.exp(-log_mix(-log_r, 1.0 - b))

    def log_h(self, log_r: Tensor) -> Tensor:
        return math.log(float(self.beta) * (1.0 - float(self.beta))) - log_mix(-log_r, 1.0 - float(self.beta))

    def perspective(self) -> Divergence:
        return GeneralizedJS(beta=1.0 - float(self.beta))


@register("softened_reverse_kl")
@dataclasses.dataclass(frozen=True)
class SoftenedReverseKL(Divergence):
    """Softened reverse KL, ``2 KL(M || P)`` with ``M = (P + Q)/2``: ``f(r) = (r + 1) log((r + 1)/(2r))``.

    g(r) = 1 + log((r + 1)/(2r)), h(r) = 1/(1 + r). Conjugate: ``softened_forward_kl``.
    """

    terms = _terms.softened_reverse_terms
    triton_terms = kernel_terms("softened_reverse_kl_terms")

    def f(self, log_r: Tensor) -> Tensor:
        return (1.0 + torch.exp(log_r)) * (F.softplus(-log_r) - LOG2)

    def g(self, log_r: Tensor) -> Tensor:
        return 1.0 + F.softplus(-log_r) - LOG2

    def h(self, log_r: Tensor) -> Tensor:
        return torch.sigmoid(-log_r)

    def log_h(self, log_r: Tensor) -> Tensor:
        return F.logsigmoid(-log_r)

    def perspective(self) -> Divergence:
        return SoftenedForwardKL()


@register("softened_forward_kl")
@dataclasses.dataclass(frozen=True)
class SoftenedForwardKL(Divergence):
    """Softened forward KL, ``2 KL(M || Q)`` with ``M = (P + Q)/2``: ``f(r) = (1 + r) log((1 + r)/2)``.

    g(r) = log((1 + r)/2) - r, h(r) = r^2/(1 + r). Conjugate of ``softened_reverse_kl``.
    """

    terms = _terms.softened_forward_terms
    triton_terms = kernel_terms("softened_forward_kl_terms")

    def f(self, log_r: Tensor) -> Tensor:
        return (1.0 + torch.exp(log_r)) * (F.softplus(log_r) - LOG2)

    def g(self, log_r: Tensor) -> Tensor:
        val = F.softplus(log_r) - LOG2 - torch.exp(log_r)
        return torch.where(log_r == math.inf, -log_r, val)

    def h(self, log_r: Tensor) -> Tensor:
        return torch.exp(log_r + F.logsigmoid(log_r))

    def log_h(self, log_r: Tensor) -> Tensor:
        return log_r + F.logsigmoid(log_r)

    def perspective(self) -> Divergence:
        return SoftenedReverseKL()


@register("skew_forward_kl")
@dataclasses.dataclass(frozen=True)
class SkewForwardKL(Divergence):
    """DistiLLM's skew KL, ``KL(P || skew P + (1 - skew) Q)``: ``f(r) = r log(r / m(r))``, ``m(r) = skew r + 1 - skew``.

    g(r) = -(1 - skew) r / m(r), h(r) = (1 - skew)^2 r / m(r)^2. skew = 0 is
    forward KL; the perspective is ``skew_reverse_kl`` with the same skew.
    """

    skew: float = 0.1

    terms = _terms.skew_terms
    triton_terms = kernel_terms("skew_forward_kl_terms", lambda d: (log0(float(d.skew)), log0(1.0 - float(d.skew)), 0.0))

    def __post_init__(self) -> None:
        _check_real("skew", self.skew, 0.0, 1.0, lo_open=False, hi_open=True)

    def f(self, log_r: Tensor) -> Tensor:
        lam = float(self.skew)
        return mul_exp(log_r, -log_mix(-log_r, 1.0 - lam))  # t - m = -log(lam + (1-lam)/r)

    def g(self, log_r: Tensor) -> Tensor:
        lam = float(self.skew)
        return -(1.0 - lam) * torch.exp(-log_mix(-log_r, 1.0 - lam))

    def h(self, log_r: Tensor) -> Tensor:
        lam = float(self.skew)
        return (1.0 - lam) ** 2 * torch.exp(-log_mix(-log_r, 1.0 - lam) - log_mix(log_r, lam))

    def log_h(self, log_r: Tensor) -> Tensor:
        return 2.0 * math.log(1.0 - float(self.skew)) - log_mix(-log_r, 1.0 - float(self.skew)) - log_mix(log_r, float(self.skew))

    def perspective(self) -> Divergence:
        return SkewReverseKL(skew=self.skew)


@register("skew_reverse_kl")
@dataclasses.dataclass(frozen=True)
class SkewReverseKL(Divergence):
    """DistiLLM's skew reverse KL, ``KL(Q || (1 - skew) P + skew Q)``: ``f(r) = -log((1 - skew) r + skew)``.

    g(r) = f(r) + (1 - skew) r / ((1 - skew) r + skew),
    h(r) = ((1 - skew) r / ((1 - skew) r + skew))^2. skew = 0 is reverse KL.
    """

    skew: float = 0.1

    terms = _terms.skew_reverse_terms
    triton_terms = kernel_terms("skew_reverse_kl_terms", lambda d: (log0(1.0 - float(d.skew)), log0(float(d.skew)), 0.0))

    def __post_init__(self) -> None:
        _check_real("skew", self.skew, 0.0, 1.0, lo_open=False, hi_open=True)

    def f(self, log_r: Tensor) -> Tensor:
        return -log_mix(log_r, 1.0 - float(self.skew))

    def g(self, log_r: Tensor) -> Tensor:
        lam = float(self.skew)
        return -log_mix(log_r, 1.0 - lam) + (1.0 - lam) * torch.exp(-log_mix(-log_r, lam))

    def h(self, log_r: Tensor) -> Tensor:
        lam = float(self.skew)
        return (1.0 - lam) ** 2 * torch.exp(-2.0 * log_mix(-log_r, lam))

    def log_h(self, log_r: Tensor) -> Tensor:
        return 2.0 * math.log(1.0 - float(self.skew)) - 2.0 * log_mix(-log_r, float(self.skew))

    def perspective(self) -> Divergence:
        return SkewForwardKL(skew=self.skew)
