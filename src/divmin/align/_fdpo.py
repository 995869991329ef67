"""f-DPO: direct preference optimisation under any admissible f-divergence constraint.

In DESIGN.md's convention the reference policy is the target P = pi_ref and the
policy is the model Q = pi, so r = pi_ref / pi and the regulariser is
D_f(pi_ref || pi) = E_pi[f(pi_ref / pi)]. The KKT conditions of
``max_pi E_pi[R] - beta D_f(pi_ref || pi)`` give the implicit reward

    R(x, y) = beta * g(r(y)) + lambda(x),       g(r) = f(r) - r f'(r),

and lambda(x) cancels in the Bradley-Terry difference, so the loss is

    -log sigmoid(beta * (g(r_chosen) - g(r_rejected))).

Mapping to the f-DPO paper (Wang et al. 2023): its regulariser is
E_pi_ref[f_paper(u)], u = pi / pi_ref, i.e. our perspective, and its score
psi(u) = f_paper'(u) equals our g(1/u): reverse KL -> log u + 1 (DPO), forward KL
-> -1/u, JS -> log(2u / (1 + u)), ``alpha(alpha=a)`` -> (1 - u^-a) / a. TRL's
``f_alpha_divergence_coef`` is 1 - a.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..divergences import Divergence, as_divergence
from ..divergences.kernels import check_log_probs, check_real

__all__ = ["FDPOOutput", "fdpo_loss", "fdpo_admissible"]


class FDPOOutput(NamedTuple):
    loss: Tensor  # scalar: mean over examples
    chosen_rewards: Tensor  # (B,) beta * g(pi_ref / pi) on chosen responses, detached
    rejected_rewards: Tensor  # (B,) the same on rejected responses, detached


def fdpo_admissible(divergence: "str | Divergence") -> tuple[bool, str]:
    """Whether the reward-to-policy map of f-DPO is valid for this divergence, and why not.

    The optimum pi = pi_ref / g^{-1}((R - lambda) / beta) needs g strictly
    decreasing in r (h = r^2 f'' > 0) and unbounded below as r -> inf (the
    paper's "0 not in the domain of f'"), so that every reward maps to a policy.
    The registry decides it once per member (capability ``"implicit_reward"``).

    >>> fdpo_admissible("reverse_kl")
    (True, '')
    >>> fdpo_admissible("total_variation")[0]
    False
    """
    why = as_divergence(divergence, kinds=None).why_not("implicit_reward")
    return why is None, why or ""


class _Reward(torch.autograd.Function):
    """``g(log r)`` with the derivative ``dg/dlog r = -h(log r)`` (g = f - r f' gives g' = -r^2 f'').

    Autograd through g's own formula loses the derivative where g saturates: torch's expm1 backward
    forms ``1 + expm1(x)``, which is 0 for x below about -17 (float32), and members whose g is a
    difference of two terms (skew reverse KL) cancel. h is each member's accurate closed form.
    """

    generate_vmap_rule = True  # torch.func.vmap over pairs (population_fdpo_loss)

    @staticmethod
    def forward(log_r: Tensor, div: Divergence) -> Tensor:  # type: ignore[override]
        return div.g(log_r)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # type: ignore[override]
        ctx.save_for_backward(inputs[0])
        ctx.save_for_forward(inputs[0])
        ctx.div = inputs[1]

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (log_r,) = ctx.saved_tensors  # differentiable ops: second derivatives (Hessians) flow through h
        return -grad * ctx.div.h(log_r), None

    @staticmethod
    def jvp(ctx, tangent: Tensor, _: None) -> Tensor:  # type: ignore[override]
        return -tangent * ctx.div.h(ctx.saved_tensors[0])


def _check_logps(**tensors: Tensor) -> torch.Size:
    shape = None
    for name, x in tensors.items():
        check_log_probs(name, x, shape=shape)
        shape = x.shape
    return shape


def fdpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    divergence: "str | Divergence" = "reverse_kl",
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> FDPOOutput:
    """The f-DPO loss and implicit rewards; all inputs are (B,) summed response log-probabilities.

    ``label_smoothing`` eps gives the conservative loss
    ``-(1 - eps) log sigmoid(d) - eps log sigmoid(-d)``. Computation is in float32
    (or float64) whatever the input dtype. It is exact wherever the member's g and its
    derivative are finite in that dtype: log r is clamped to the member's own
    :meth:`~divmin.divergences.Divergence.g_range` and nowhere else, so reverse KL (DPO)
    is exact up to |log r| = max / 8 (4e37 in float32), forward KL (g = -r) up to log r = log(max / 8)
    (about 86.6 in float32); past the clamp the reward saturates and its gradient is 0.

    >>> lp = torch.tensor([-5.0]); out = fdpo_loss(lp, lp - 1, lp, lp, beta=0.5)
    >>> round(out.loss.item(), 4)  # -log sigmoid(0.5 * 1)
    0.4741
    """
    _check_logps(policy_chosen_logps=policy_chosen_logps, policy_rejected_logps=policy_rejected_logps,
                 ref_chosen_logps=ref_chosen_logps, ref_rejected_logps=ref_rejected_logps)
    beta = check_real("beta", beta, gt=0)
    label_smoothing = check_real("label_smoothing", label_smoothing, ge=0)
    if not label_smoothing < 0.5:
        raise ValueError(f"`label_smoothing` must lie in [0, 0.5), got {label_smoothing!r}")
    div = as_divergence(divergence).require("implicit_reward")  # cached per member
    dtype = torch.promote_types(policy_chosen_logps.dtype, torch.float32)
    # only where this member's g or g' would overflow: any wider clamp makes the loss wrong
    lo, hi = div.g_range(dtype)

    def reward(policy: Tensor, ref: Tensor) -> Tensor:
        log_r = (ref.to(dtype) - policy.to(dtype)).clamp(lo, hi)
        return beta * _Reward.apply(log_r, div)

    chosen, rejected = reward(policy_chosen_logps, ref_chosen_logps), reward(policy_rejected_logps, ref_rejected_logps)
    margin = chosen - rejected
    loss = -(1.0 - label_smoothing) * F.logsigmoid(margin) - label_smoothing * F.logsigmoid(-margin)
    return FDPOOutput(loss.mean(), chosen.detach(), rejected.detach())
