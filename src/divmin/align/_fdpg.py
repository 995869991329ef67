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

Z: when ``log_z`` is not given it is the batch's self-normalised importance
estimate log mean_i exp(s(x_i) - log q(x_i)) (exact when the batch enumerates
the space under a uniform proposal); :class:`LogZEstimator` keeps a running
estimate across batches, per context for conditional targets.
"""

from __future__ import annotations

import math
from typing import Hashable, NamedTuple, Sequence

import torch
from torch import Tensor

from ..divergences import Divergence, as_divergence

__all__ = ["FDPGOutput", "LogZEstimator", "MovingBaseline", "fdpg_loss"]


class FDPGOutput(NamedTuple):
    loss: Tensor  # scalar surrogate; its gradient is the f-DPG gradient estimate
    pseudo_rewards: Tensor  # (B,) -g(r), detached (before the baseline)
    weights: Tensor  # (B,) importance weights Q / q, detached (ones online)
    log_ratio: Tensor  # (B,) log r = log P - log Q, detached


def _check(policy_logps: Tensor, target_log_scores: Tensor, **optional: Tensor | None) -> None:
    if not isinstance(policy_logps, Tensor) or policy_logps.dim() != 1:
        raise ValueError("`policy_logps` must be a 1-D tensor (one log Q(x) per sample)")
    for name, t in {"target_log_scores": target_log_scores, **optional}.items():
        if t is None:
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"`{name}` must be a tensor, got {type(t).__name__}")
        if t.dim() > 1 or (t.dim() == 1 and t.shape != policy_logps.shape) or (t.dim() == 0 and name not in
                                                                                ("log_z", "baseline")):
            raise ValueError(f"`{name}` must have the shape of `policy_logps` {tuple(policy_logps.shape)}"
                             f"{' or be a scalar' if name in ('log_z', 'baseline') else ''}, got {tuple(t.shape)}")
    if bool(torch.isnan(policy_logps).any()) or bool((policy_logps == math.inf).any()):
        raise ValueError("`policy_logps` contains NaN or +inf")


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
    log_z = torch.as_tensor(log_z, dtype=torch.float32) if isinstance(log_z, (int, float)) else log_z
    baseline = torch.as_tensor(baseline, dtype=torch.float32) if isinstance(baseline, (int, float)) else baseline
    _check(policy_logps, target_log_scores, proposal_logps=proposal_logps, log_z=log_z, baseline=baseline)
    with torch.no_grad():
        logq_pol = policy_logps.detach().float()
        s = target_log_scores.detach().float()
        log_w = torch.zeros_like(logq_pol) if proposal_logps is None else logq_pol - proposal_logps.detach().float()
        if log_z is None:
            logq_prop = logq_pol if proposal_logps is None else proposal_logps.detach().float()
            log_z = torch.logsumexp(s - logq_prop, 0) - math.log(s.shape[0])
            if not bool(torch.isfinite(log_z)):
                raise ValueError("every sample has target score -inf (or +inf): cannot estimate Z; pass `log_z`")
        log_ratio = s - log_z.float() - logq_pol
        g = div.g(log_ratio)
        weights = log_w.exp()
        bad = ~torch.isfinite(g) & (weights > 0)
        if bool(bad.any()):
            raise ValueError(f"{div}: g(r) is not finite on {int(bad.sum())} sample(s) (log r = "
                             f"{float(log_ratio[bad][0]):.3g}); a target that gives zero mass to samples "
                             "the policy produces makes this divergence infinite: smooth the constraint "
                             "(e.g. PointwiseConstraint(..., epsilon=1e-3)) or use a divergence with "
                             "finite f(0) (forward KL, JS, TV, Hellinger, alpha in (0, 1))")
        coef = weights * (g if baseline is None else g - baseline.float())
    loss = (coef.to(policy_logps.dtype) * policy_logps).mean()
    return FDPGOutput(loss, -g, weights, log_ratio)


class LogZEstimator:
    """Running importance-sampling estimate of log Z = log E_q[exp(s(x)) / q(x)], per key.

    Keeps log sum_i exp(s_i - log q_i) and the count per context key (one global
    key for unconditional targets); the estimate is their log-mean, the
    cumulative average of disco's running Z, computed in log space.
    """

    def __init__(self) -> None:
        self._log_sum: dict[Hashable, float] = {}
        self._count: dict[Hashable, int] = {}

    def update(self, target_log_scores: Tensor, proposal_logps: Tensor,
               keys: Sequence[Hashable] | None = None) -> Tensor:
        """Fold in a batch; returns (B,) the current log Z of each sample's key."""
        if target_log_scores.shape != proposal_logps.shape or target_log_scores.dim() != 1:
            raise ValueError("`target_log_scores` and `proposal_logps` must be 1-D and of equal shape")
        keys = [None] * len(target_log_scores) if keys is None else list(keys)
        if len(keys) != len(target_log_scores):
            raise ValueError(f"`keys` has {len(keys)} entries for {len(target_log_scores)} samples")
        terms = (target_log_scores.detach().double() - proposal_logps.detach().double()).cpu()
        for key in dict.fromkeys(keys):
            mine = terms[[k == key for k in keys]]
            prev = self._log_sum.get(key, -math.inf)
            self._log_sum[key] = float(torch.logsumexp(torch.cat([mine, torch.tensor([prev], dtype=torch.float64)]),
                                                       0))
            self._count[key] = self._count.get(key, 0) + len(mine)
        return torch.tensor([self.log_z(k) for k in keys], dtype=torch.float32)

    def log_z(self, key: Hashable = None) -> float:
        if key not in self._count:
            raise KeyError(f"no sample seen yet for key {key!r}")
        return self._log_sum[key] - math.log(self._count[key])

    def state_dict(self) -> dict:
        """JSON-able state (keys must be str, int or None, e.g. context texts)."""
        for k in self._count:
            if not (k is None or isinstance(k, (str, int))):
                raise TypeError(f"cannot serialise context key of type {type(k).__name__}; use str keys")
        return {"keys": list(self._count), "log_sum": list(self._log_sum.values()),
                "count": list(self._count.values())}

    def load_state_dict(self, state: dict) -> None:
        self._log_sum = dict(zip(state["keys"], state["log_sum"]))
        self._count = dict(zip(state["keys"], state["count"]))


class MovingBaseline:
    """Exponential moving average of importance-weighted g values (the baseline b in fdpg_loss)."""

    def __init__(self, decay: float = 0.9) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"`decay` must be in [0, 1), got {decay}")
        self.decay, self.value = decay, None

    def __call__(self) -> float | None:
        return self.value

    def update(self, output: FDPGOutput) -> float:
        w = output.weights
        batch = float((w * -output.pseudo_rewards).sum() / w.sum().clamp_min(1e-30))
        self.value = batch if self.value is None else self.decay * self.value + (1 - self.decay) * batch
        return self.value
