"""Registry members of kind ``"integral"``: an f-divergence integrated over a masking (diffusion) path.

With P the target (teacher) and Q the model (student) over sequences, and P_t, Q_t their
marginals after the forward process (each token masked independently with probability t),

    D_int(P || Q) = int_0^1 D_f(P_t || Q_t) dt        (uniform time weight).

DiDi-Instruct minimises the integral KL(Q_t || P_t), the reverse KL of DESIGN.md's
convention (``integral_reverse_kl``). Its gradient needs no model density at x_t: since
Q_t(x_t) = sum_x0 Q(x0) q(x_t | x0) and only Q depends on theta,

    grad D_f(P_t || Q_t) = E_{x0 ~ Q, x_t ~ q(.|x0)} [ g(r_t(x_t)) grad log Q(x0) ],
    g(r) = f(r) - r f'(r),   r_t = P_t / Q_t,

so a student update is REINFORCE on the clean sample (or on the whole sampling path, whose
score has the same expectation) with the per-sample reward ``-g(r_t)``, where log r_t is a
discriminator's log-odds between noised teacher and noised student samples. Members say
how log r becomes that reward (:meth:`IntegralDivergence.reward`): reverse KL,
-g = log r - 1 (the log-odds, up to a constant that a baseline removes); forward KL,
-g = r. ``integral_f`` integrates any f-divergence of the registry.

Reference: Zheng et al., "Ultra-Fast Language Generation via Discrete Diffusion Divergence
Instruct" (2025), the integral KL and its policy-gradient form.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import Tensor

from ._base import Discrepancy, Divergence, as_divergence, register

__all__ = ["IntegralDivergence", "IntegralF", "IntegralForwardKL", "IntegralReverseKL"]


@dataclasses.dataclass(frozen=True)
class IntegralDivergence(Discrepancy):
    """int_0^1 D_f(P_t || Q_t) dt over the masking path; ``base()`` is the f member integrated.

    Elementwise on the log-ratio log r_t = log P_t(x_t) - log Q_t(x_t) (e.g. a discriminator's logit):
    ``reward(log_r)`` = -g(r_t), the policy-gradient reward of a model sample; ``integrand(log_r)``
    = f(r_t), whose mean over model samples and t ~ U(0, 1) estimates the value.
    """

    kind: ClassVar[str] = "integral"
    base_name: ClassVar[str] = ""

    def base(self) -> Divergence:
        """The f-divergence member integrated over the path."""
        return as_divergence(self.base_name)

    def reward(self, log_ratio: Tensor) -> Tensor:
        """-g(r) elementwise (float32 or wider): the reward whose REINFORCE step descends the divergence."""
        return -self.base().g(_wide(log_ratio))

    def integrand(self, log_ratio: Tensor) -> Tensor:
        """f(r) elementwise: E over model samples and t of this is the divergence."""
        return self.base().f(_wide(log_ratio))


def _wide(log_ratio: Tensor) -> Tensor:
    """fp32 or wider: a bf16 log r would round the reward."""
    return log_ratio.to(torch.promote_types(log_ratio.dtype, torch.float32))


@register("integral_reverse_kl")
@dataclasses.dataclass(frozen=True)
class IntegralReverseKL(IntegralDivergence):
    """int_0^1 KL(Q_t || P_t) dt, DiDi-Instruct's integral KL; reward log r_t - 1.

    >>> import torch
    >>> from divmin import divergence
    >>> divergence("integral_reverse_kl").reward(torch.tensor([0.0, 2.0]))  # log r - 1
    tensor([-1.,  1.])
    """

    base_name: ClassVar[str] = "reverse_kl"


@register("integral_forward_kl")
@dataclasses.dataclass(frozen=True)
class IntegralForwardKL(IntegralDivergence):
    """int_0^1 KL(P_t || Q_t) dt (mass-covering); reward r_t = exp(log r_t)."""

    base_name: ClassVar[str] = "forward_kl"


@register("integral_f")
@dataclasses.dataclass(frozen=True)
class IntegralF(IntegralDivergence):
    """int_0^1 D_f(P_t || Q_t) dt for any f member, e.g. ``"integral_f:js"`` or ``"integral_f:f='alpha:0.5'"``."""

    f: str = "js"  # a registry name or spec of kind "f"

    def __post_init__(self) -> None:
        if not isinstance(self.f, str):
            raise TypeError(f"`f` must be a registry name (str) of kind 'f', got {type(self.f).__name__}")
        as_divergence(self.f, "f")  # refuses unknown names and other kinds, listing the valid ones

    def base(self) -> Divergence:
        return as_divergence(self.f, "f")
