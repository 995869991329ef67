"""Self-normalised importance estimates of the log partition function of an energy-based target.

A target P(x) = exp(s(x)) / Z known through its unnormalised log-score s has

    Z = E_q[ exp(s(x)) / q(x) ]    for any proposal q whose support covers P's,

so with samples x_i ~ q the estimate is log Z ~ log mean_i exp(s_i - log q_i),
computed as a logsumexp in float64 (s and log q may each be in the hundreds
while their difference is small; exp of either would overflow). It is exact when
the samples enumerate the whole space under a uniform proposal, consistent (not
unbiased: the log of an unbiased mean) otherwise.
:func:`self_normalized_log_z` is the one-batch estimate; :class:`LogZEstimator`
accumulates the same sums across batches, per context for conditional targets
(one Z(c) per prompt c), as DPG's running Z does.

References: Khalifa, Elsahar & Dymetman (DPG, 2021); Go et al. (f-DPG, 2023).
"""

from __future__ import annotations

import math
from typing import Hashable, Sequence

import torch
from torch import Tensor

__all__ = ["LogZEstimator", "self_normalized_log_z"]


def _log_terms(target_log_scores: Tensor, proposal_logps: Tensor) -> Tensor:
    """(B,) s_i - log q_i in float64, after checking both are 1-D tensors of one shape."""
    for name, t in (("target_log_scores", target_log_scores), ("proposal_logps", proposal_logps)):
        if not isinstance(t, Tensor):
            raise TypeError(f"`{name}` must be a tensor, got {type(t).__name__}")
        if t.dim() != 1 or t.numel() == 0:
            raise ValueError(f"`{name}` must be a non-empty 1-D tensor (one value per sample), "
                             f"got shape {tuple(t.shape)}")
    if target_log_scores.shape != proposal_logps.shape:
        raise ValueError(f"`target_log_scores` {tuple(target_log_scores.shape)} and `proposal_logps` "
                         f"{tuple(proposal_logps.shape)} must have the same shape")
    if bool(torch.isnan(target_log_scores).any() | (target_log_scores == math.inf).any()):
        raise ValueError("`target_log_scores` contains NaN or +inf: a sample has infinite or NaN importance weight")
    if bool(torch.isnan(proposal_logps).any() | proposal_logps.isinf().any()):
        raise ValueError("`proposal_logps` must be finite (every sample was drawn from q, so q(x) > 0): -inf or NaN "
                         "gives an infinite or NaN importance weight")
    return target_log_scores.double() - proposal_logps.double()


def self_normalized_log_z(target_log_scores: Tensor, proposal_logps: Tensor) -> Tensor:
    """log Z ~ log mean_i exp(s_i - log q_i) from samples x_i of a proposal q: a float64 scalar.

    Args:
        target_log_scores: (B,) unnormalised log P(x_i) = s(x_i); ``-inf`` where P has no mass.
        proposal_logps: (B,) log q(x_i) of the distribution the samples came from.

    Raises:
        ValueError: when no sample has finite positive mass (every s_i = -inf), or some
            exp(s_i - log q_i) is infinite or NaN (s_i = +inf, log q_i = -inf, NaN inputs).

    Differentiable in both inputs. Exact on an enumerated space under a uniform proposal:

    >>> s = torch.log(torch.tensor([1.0, 2.0, 0.0, 5.0]))
    >>> round(math.exp(self_normalized_log_z(s, torch.full((4,), math.log(0.25)))), 6)  # Z = 1 + 2 + 0 + 5
    8.0
    """
    terms = _log_terms(target_log_scores, proposal_logps)
    log_z = torch.logsumexp(terms, 0) - math.log(terms.shape[0])
    if not bool(torch.isfinite(log_z)):
        if bool((terms == -math.inf).all()):
            raise ValueError(f"no sample has finite mass: every `target_log_scores` - `proposal_logps` is "
                             f"-inf over the {terms.shape[0]} sample(s), so log Z cannot be estimated")
        raise ValueError("a sample has infinite or NaN importance weight exp(s - log q): check "
                         "`target_log_scores` (+inf, NaN) and `proposal_logps` (-inf, NaN)")
    return log_z


class LogZEstimator:
    """Running self-normalised estimate of log Z over every batch seen, one per context key.

    Per key it keeps log sum_i exp(s_i - log q_i) and the count, so that after any
    number of batches ``log_z(key)`` equals :func:`self_normalized_log_z` of all that
    key's samples at once (one global key, ``None``, for unconditional targets).
    Keys must be str, int or None to be checkpointed (``state_dict`` is JSON-able).

    >>> est = LogZEstimator()
    >>> z = est.update(torch.zeros(2), torch.log(torch.tensor([0.5, 0.5])), keys=["a", "a"])
    >>> z = est.update(torch.log(torch.tensor([3.0])), torch.zeros(1), keys=["a"])
    >>> round(math.exp(est.log_z("a")), 6)  # mean(2, 2, 3)
    2.333333
    """

    def __init__(self) -> None:
        self._log_sum: dict[Hashable, float] = {}
        self._count: dict[Hashable, int] = {}

    def update(self, target_log_scores: Tensor, proposal_logps: Tensor,
               keys: Sequence[Hashable] | None = None) -> Tensor:
        """Fold in a batch (B,) of scores and proposal log-probs; returns (B,) float32, each sample's key's log Z."""
        terms = _log_terms(target_log_scores, proposal_logps).detach().cpu()
        keys = [None] * len(terms) if keys is None else list(keys)
        if len(keys) != len(terms):
            raise ValueError(f"`keys` has {len(keys)} entries for {len(terms)} samples")
        for key in dict.fromkeys(keys):
            mine = terms[[k == key for k in keys]]
            prev = torch.tensor([self._log_sum.get(key, -math.inf)], dtype=torch.float64)
            self._log_sum[key] = float(torch.logsumexp(torch.cat([mine, prev]), 0))
            self._count[key] = self._count.get(key, 0) + len(mine)
        return torch.tensor([self.log_z(k) for k in keys], dtype=torch.float32)

    def log_z(self, key: Hashable = None) -> float:
        """The current estimate for ``key``; KeyError before its first sample."""
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
