"""f-DPG: distributional policy gradient toward an energy-based target, under any f.

Target P(x) = exp(s(x)) / Z with unnormalised log-score s (see
:mod:`divmin.align.targets`), model Q = pi_theta, r = P / Q. In DESIGN.md's
convention the objective is D_f(P || Q) = E_Q[f(r)] and, because
d/dtheta [Q f(P/Q)] = (f(r) - r f'(r)) dQ/dtheta,

    grad_theta D_f(P || Q) = E_Q[ g(r) grad log Q ],        g(r) = f(r) - r f'(r).

With samples x_i from a proposal q (q = Q online; a frozen model offline) the
importance weights w_i = Q(x_i) / q(x_i) give the unbiased estimate
mean_i w_i (g(r_i) - b) grad log Q(x_i), for any baseline b (E_Q[grad log Q] = 0).
:func:`fdpg_loss` returns the surrogate mean_i sg[w_i (g(r_i) - b)] log Q(x_i)
whose autograd gradient is that estimate; the pseudo-reward is -g(r).

Special cases (tested): reverse KL, g = 1 - log r, is KL-regularised policy
gradient with reward log P - log Q; forward KL, g = -r, gives
-mean_i (P(x_i) / q(x_i)) grad log Q(x_i), DPG's importance-weighted maximum
likelihood. Mapping to the f-DPG paper (Go et al. 2023): it minimises
D_f(pi || p) = E_p[f~(pi/p)] with f~(u) = u f(1/u) our perspective, and its
gradient E_pi[f~'(pi/p) grad log pi] equals ours because f~'(1/r) = g(r).

The estimator itself, log r in, is :func:`divmin.estimators.score_function_surrogate`;
this module forms log r = s - log Z - log Q from the target. Z: when ``log_z`` is
not given it is the batch's self-normalised importance estimate
(:func:`divmin.estimators.self_normalized_log_z`, exact when the batch enumerates
the space under a uniform proposal); :class:`~divmin.estimators.LogZEstimator`
keeps a running estimate across batches, per context for conditional targets.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from ..divergences import Divergence, as_divergence
from ..divergences.kernels import NonFiniteInputError, check_float_tensor, check_log_probs
from ..estimators import ScoreFunctionOutput, score_function_surrogate, self_normalized_log_z

__all__ = ["FDPGOutput", "fdpg_loss"]

# (loss, pseudo_rewards = -g(r), weights = Q / q, log_ratio = log P - log Q): the estimator's output
FDPGOutput = ScoreFunctionOutput


def _check(policy_logps: Tensor, target_log_scores: Tensor, **optional: Tensor | None) -> None:
    check_log_probs("policy_logps", policy_logps)
    for name, t in {"target_log_scores": target_log_scores, **optional}.items():
        if t is None:
            continue
        check_float_tensor(name, t)
        if t.dim() > 1 or (t.dim() == 1 and t.shape != policy_logps.shape) or (t.dim() == 0 and name not in
                                                                                ("log_z", "baseline")):
            raise ValueError(f"`{name}` must have the shape of `policy_logps` {tuple(policy_logps.shape)}"
                             f"{' or be a scalar' if name in ('log_z', 'baseline') else ''}, got {tuple(t.shape)}")
        if bool(torch.isnan(t).any()):
            raise NonFiniteInputError(f"`{name}` contains NaN")
    if bool((target_log_scores == math.inf).any()):
        raise ValueError("`target_log_scores` contains +inf (an unnormalised log-score is finite, or -inf where "
                         "a hard constraint fails)")
    for name in ("log_z", "baseline"):
        value = optional.get(name)
        if value is not None and not bool(torch.isfinite(value).all()):
            raise ValueError(f"`{name}` must be finite")


def fdpg_loss(policy_logps: Tensor, target_log_scores: Tensor, *, divergence: "str | Divergence" = "js",
              proposal_logps: Tensor | None = None, log_z: "Tensor | float | None" = None,
              baseline: "Tensor | float | None" = None) -> FDPGOutput:
    """The f-DPG surrogate loss for a batch of samples.

    Args:
        policy_logps: (B,) log Q(x_i) under the policy, with grad.
        target_log_scores: (B,) unnormalised log P(x_i) (``-inf`` where a hard constraint fails).
        divergence: registry name or ``Divergence``; the gradient is that of D_f(P || Q).
        proposal_logps: (B,) log q(x_i) of the distribution the samples came from;
            ``None`` means the policy itself (online, weights 1).
        log_z: scalar or (B,) log partition function (per context); ``None`` uses the
            batch's self-normalised importance estimate.
        baseline: scalar or (B,) value subtracted from g (variance reduction).

    >>> logq = torch.log_softmax(torch.zeros(4, requires_grad=True), 0)
    >>> out = fdpg_loss(logq, torch.log(torch.tensor([0.4, 0.3, 0.2, 0.1])), divergence="forward_kl",
    ...                 proposal_logps=torch.full((4,), math.log(0.25)))
    >>> round(float(out.log_ratio.exp().sum()), 4)  # r = P / Q sums to 4 * 1 under Q uniform
    4.0
    """
    div = as_divergence(divergence)
    log_z = torch.as_tensor(float(log_z)) if isinstance(log_z, numbers.Real) and not isinstance(log_z, bool) else log_z
    baseline = (torch.as_tensor(float(baseline)) if isinstance(baseline, numbers.Real) and not isinstance(baseline, bool)
                else baseline)
    _check(policy_logps, target_log_scores, proposal_logps=proposal_logps, log_z=log_z, baseline=baseline)
    with torch.no_grad():
        logq_pol = policy_logps.detach().float()
        s = target_log_scores.detach().float()
        log_w = None if proposal_logps is None else logq_pol - proposal_logps.detach().float()
        if log_z is None:
            try:
                log_z = self_normalized_log_z(s, logq_pol if proposal_logps is None else proposal_logps.detach())
            except ValueError as err:
                raise ValueError(f"{err}; pass `log_z`") from None
        log_ratio = s - log_z.float() - logq_pol
    return score_function_surrogate(policy_logps, log_ratio, divergence=div, log_weights=log_w,
                                    baseline=baseline)
