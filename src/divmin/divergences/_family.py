"""The parameter-free members of the f-divergence family.

Every member writes f, g = f - r f' and h = r^2 f'' as functions of t = log r
(DESIGN.md's convention: P target, Q model, r = P/Q), finite at t = -inf where
the limit is, so that categorical closed forms can use them on zero-probability
entries. The table in DESIGN.md lists the formulas; tests check every entry by
finite differences.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ._base import Divergence, register
from ._hooks import kernel_terms
from ._numerics import LOG2, mul_exp, piecewise
from . import _terms

__all__ = [
    "ForwardKL",
    "ReverseKL",
    "JS",
    "TotalVariation",
    "SquaredHellinger",
    "PearsonChi2",
    "NeymanChi2",
    "Jeffreys",
]


@register("forward_kl")
@dataclasses.dataclass(frozen=True)
class ForwardKL(Divergence):
    """Forward KL, ``KL(P || Q) = E_P[log P/Q]``: ``f(r) = r log r`` (mass-covering).

    g(r) = -r, h(r) = r. In f-DPG this is DPG (importance-weighted maximum
    likelihood); it is TRL GKD's ``beta=0`` and the usual distillation loss.
    """

    terms = _terms.kl_terms
    triton_terms = kernel_terms("forward_kl_terms")

    def f(self, log_r: Tensor) -> Tensor:
        return mul_exp(log_r, log_r)

    def g(self, log_r: Tensor) -> Tensor:
        return -torch.exp(log_r)

    def h(self, log_r: Tensor) -> Tensor:
        return torch.exp(log_r)

    def log_h(self, log_r: Tensor) -> Tensor:
        return log_r.clone()

    def perspective(self) -> Divergence:
        return ReverseKL()



@register("reverse_kl")
@dataclasses.dataclass(frozen=True)
class ReverseKL(Divergence):
    """Reverse KL, ``KL(Q || P) = E_Q[log Q/P]``: ``f(r) = -log r`` (mode-seeking).

    g(r) = 1 - log r, h(r) = 1. In f-DPO it gives standard DPO (score
    ``beta * log(pi/pi_ref)`` up to a constant); in f-DPG it is KL-regularised
    policy gradient with reward ``log P - log Q``; in f-distill it is DMD / VSD.
    """

    terms = _terms.reverse_kl_terms
    triton_terms = kernel_terms("reverse_kl_terms")

    def f(self, log_r: Tensor) -> Tensor:
        return -log_r

    def g(self, log_r: Tensor) -> Tensor:
        return 1.0 - log_r

    def h(self, log_r: Tensor) -> Tensor:
        return torch.ones_like(log_r)

    def log_h(self, log_r: Tensor) -> Tensor:
        return torch.zeros_like(log_r)

    def perspective(self) -> Divergence:
        return ForwardKL()



@register("js")
@dataclasses.dataclass(frozen=True)
class JS(Divergence):
    """Unscaled Jensen-Shannon, ``KL(P || M) + KL(Q || M)`` with ``M = (P + Q)/2``.

    ``f(r) = r log r - (r + 1) log((r + 1)/2)``, g(r) = log(2/(1 + r)),
    h(r) = r/(1 + r). It equals twice the usual JSD (bounded by 2 log 2) and twice
    ``generalized_js(beta=0.5)``. The f-DPO paper's JS score ``log(2u/(1+u))``,
    u = pi/pi_ref, is ``g(pi_ref/pi)`` here up to sign-free constants.
    """

    terms = _terms.js_terms
    triton_terms = kernel_terms("mixture_terms", lambda d: (math.log(0.5), math.log(0.5), 2.0))

    def f_nonpos(self, s: Tensor) -> Tensor:  # finite at s = -inf, where f(0) = log 2
        return mul_exp(s, s) - (1.0 + torch.exp(s)) * (F.softplus(s) - LOG2)

    def f(self, log_r: Tensor) -> Tensor:
        def pos(t: Tensor) -> Tensor:  # no inf - inf for large t
            val = (1.0 + torch.exp(t)) * (LOG2 - F.softplus(-t)) - t
            return torch.where(t == math.inf, t, val)

        return piecewise(log_r, self.f_nonpos, pos)

    def g(self, log_r: Tensor) -> Tensor:
        return LOG2 - F.softplus(log_r)

    def h(self, log_r: Tensor) -> Tensor:
        return torch.sigmoid(log_r)

    def log_h(self, log_r: Tensor) -> Tensor:
        return F.logsigmoid(log_r)

    def perspective(self) -> Divergence:
        return self


@register("total_variation")
@dataclasses.dataclass(frozen=True)
class TotalVariation(Divergence):
    """Total variation, ``sum |P - Q| / 2``: ``f(r) = |r - 1|/2``.

    g(r) = sign(1 - r)/2 and h = 0 almost everywhere: f is not differentiable at
    r = 1, so it has no f-DPO reward map and gives f-distill no gradient.
    """

    terms = _terms.total_variation_terms
    triton_terms = kernel_terms("total_variation_terms")

    def f(self, log_r: Tensor) -> Tensor:
        return 0.5 * torch.expm1(log_r).abs()

    def g(self, log_r: Tensor) -> Tensor:
        return 0.5 * torch.sign(-log_r)

    def h(self, log_r: Tensor) -> Tensor:
        return torch.zeros_like(log_r)

    def perspective(self) -> Divergence:
        return self


@register("squared_hellinger")
@dataclasses.dataclass(frozen=True)
class SquaredHellinger(Divergence):
    """Squared Hellinger, ``sum (sqrt P - sqrt Q)^2``: ``f(r) = (sqrt r - 1)^2``.

    g(r) = 1 - sqrt r, h(r) = sqrt(r)/2. Equals half of ``alpha(alpha=0.5)``.
    """

    terms = _terms.hellinger_terms
    triton_terms = kernel_terms("squared_hellinger_terms")

    def f(self, log_r: Tensor) -> Tensor:
        return torch.expm1(0.5 * log_r).square()

    def g(self, log_r: Tensor) -> Tensor:
        return -torch.expm1(0.5 * log_r)

    def h(self, log_r: Tensor) -> Tensor:
        return 0.5 * torch.exp(0.5 * log_r)

    def log_h(self, log_r: Tensor) -> Tensor:
        return 0.5 * log_r - LOG2

    def perspective(self) -> Divergence:
        return self


@register("pearson_chi2")
@dataclasses.dataclass(frozen=True)
class PearsonChi2(Divergence):
    """Pearson chi^2, ``sum (P - Q)^2 / Q``: ``f(r) = (r - 1)^2``.

    g(r) = 1 - r^2, h(r) = 2 r^2. Infinite when Q misses mass of P.
    """

    terms = _terms.chi2_terms
    triton_terms = kernel_terms("pearson_chi2_terms")

    def f(self, log_r: Tensor) -> Tensor:
        return torch.expm1(log_r).square()

    def g(self, log_r: Tensor) -> Tensor:
        return -torch.expm1(2.0 * log_r)

    def h(self, log_r: Tensor) -> Tensor:
        return 2.0 * torch.exp(2.0 * log_r)

    def log_h(self, log_r: Tensor) -> Tensor:
        return 2.0 * log_r + LOG2

    def perspective(self) -> Divergence:
        return NeymanChi2()


@register("neyman_chi2")
@dataclasses.dataclass(frozen=True)
class NeymanChi2(Divergence):
    """Neyman chi^2, ``sum (P - Q)^2 / P``: ``f(r) = (1 - r)^2 / r``.

    g(r) = 2/r - 2, h(r) = 2/r. Infinite when Q puts mass where P has none.
    """

    terms = _terms.neyman_terms
    triton_terms = kernel_terms("neyman_chi2_terms")

    def f(self, log_r: Tensor) -> Tensor:
        return 4.0 * torch.sinh(0.5 * log_r).square()

    def g(self, log_r: Tensor) -> Tensor:
        return 2.0 * torch.expm1(-log_r)

    def h(self, log_r: Tensor) -> Tensor:
        return 2.0 * torch.exp(-log_r)

    def log_h(self, log_r: Tensor) -> Tensor:
        return LOG2 - log_r

    # w (1-r)^2/r = w/r - 2w + w r: in log space, so a weight that underflows never
    # meets an f that overflows (0 * inf) when the product itself is representable.
    def weighted_f(self, log_w: Tensor, s: Tensor) -> Tensor:
        far = torch.exp(log_w - s) - 2.0 * torch.exp(log_w) + torch.exp(log_w + s)
        return torch.where(s < -1.0, far, super().weighted_f(log_w, s))

    def weighted_g(self, log_w: Tensor, s: Tensor) -> Tensor:
        far = 2.0 * (torch.exp(log_w - s) - torch.exp(log_w))
        return torch.where(s < -1.0, far, super().weighted_g(log_w, s))

    def perspective(self) -> Divergence:
        return PearsonChi2()


@register("jeffreys")
@dataclasses.dataclass(frozen=True)
class Jeffreys(Divergence):
    """Jeffreys, ``KL(P || Q) + KL(Q || P)``: ``f(r) = (r - 1) log r``.

    g(r) = 1 - r - log r, h(r) = 1 + r.
    """

    terms = _terms.jeffreys_terms
    triton_terms = kernel_terms("jeffreys_terms")

    def f(self, log_r: Tensor) -> Tensor:
        return torch.expm1(log_r) * log_r

    def g(self, log_r: Tensor) -> Tensor:
        return -torch.expm1(log_r) - log_r

    def h(self, log_r: Tensor) -> Tensor:
        return 1.0 + torch.exp(log_r)

    def log_h(self, log_r: Tensor) -> Tensor:
        return F.softplus(log_r)

    def perspective(self) -> Divergence:
        return self

