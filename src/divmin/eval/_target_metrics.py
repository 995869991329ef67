"""How far a model Q is from an (energy-based) target P: importance-sampled and exact.

Every estimate uses the one convention D_f(P || Q) = E_Q[f(P/Q)] and the
registry, so any member is available; :func:`target_metrics` bundles the four
that disco reports (KL both ways, TV, JS). With samples x_i from a proposal q
(the model itself when ``proposal_logps`` is None), self-normalised weights
w_i proportional to Q(x_i) / q(x_i) give

    D_f(P || Q) ~ sum_i w_i f(r_i),    r_i = P(x_i) / Q(x_i),  P = exp(s - log Z).

On an enumerable space, pass every point with its exact log-probabilities to
:func:`exact_divergence` instead.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ..divergences import Divergence, as_divergence, categorical_divergence
from ..estimators import self_normalized_log_z

__all__ = ["TargetMetrics", "acceptance_rate", "exact_divergence", "is_divergence", "is_expectation", "target_metrics"]


class TargetMetrics(NamedTuple):
    kl_target_model: float  # KL(P || Q) (forward KL: coverage of the target)
    kl_model_target: float  # KL(Q || P) (reverse KL: infinite if Q puts mass where P has none)
    tv: float  # total variation
    js: float  # Jensen-Shannon (natural log, in [0, log 2])


def _log_weights(model_logps: Tensor, proposal_logps: Tensor | None) -> Tensor:
    lw = torch.zeros_like(model_logps) if proposal_logps is None else model_logps - proposal_logps
    return torch.log_softmax(lw.double(), 0)


def _log_z(target_log_scores: Tensor, model_logps: Tensor, proposal_logps: Tensor | None) -> Tensor:
    return self_normalized_log_z(target_log_scores, model_logps if proposal_logps is None else proposal_logps)


@torch.no_grad()
def is_expectation(values: Tensor, model_logps: Tensor, proposal_logps: Tensor | None = None) -> float:
    """Self-normalised importance estimate of E_Q[values] from samples of ``proposal`` (default: Q)."""
    if values.shape != model_logps.shape:
        raise ValueError(f"`values` {tuple(values.shape)} and `model_logps` {tuple(model_logps.shape)} differ")
    return float((_log_weights(model_logps, proposal_logps).exp() * values.double()).sum())


@torch.no_grad()
def is_divergence(model_logps: Tensor, target_log_scores: Tensor, *, divergence: "str | Divergence",
                  proposal_logps: Tensor | None = None, log_z: "float | Tensor | None" = None) -> float:
    """Importance-sampled D_f(P || Q) (model first, target second); ``log_z`` defaults to the samples' own estimate.

    Args:
        model_logps: (N,) log Q(x_i) of the samples under the model.
        target_log_scores: (N,) unnormalised log P(x_i) (``-inf`` off the target's support).
        divergence: keyword-only; registry name, spec string or member.
        proposal_logps: (N,) log q(x_i) of the distribution the samples came from (None: Q itself).
        log_z: log of P's normalising constant (None: self-normalised estimate).

    >>> logq = torch.log(torch.tensor([0.5, 0.5]))
    >>> logp = torch.log(torch.tensor([0.9, 0.1]))  # already normalised: log_z = 0
    >>> round(is_divergence(logq, logp, divergence="forward_kl", log_z=0.0), 4)  # sum_x Q (P/Q) log(P/Q)
    0.3681
    """
    div = as_divergence(divergence)
    if target_log_scores.shape != model_logps.shape or model_logps.dim() != 1:
        raise ValueError("`target_log_scores` and `model_logps` must be 1-D tensors of equal shape")
    lz = _log_z(target_log_scores, model_logps, proposal_logps) if log_z is None else torch.as_tensor(log_z)
    log_r = target_log_scores.double() - lz.double() - model_logps.double()
    terms = div.f(log_r)
    w = _log_weights(model_logps, proposal_logps).exp()
    return float((w * terms).where(w > 0, torch.zeros_like(terms)).sum())


def target_metrics(model_logps: Tensor, target_log_scores: Tensor, *, proposal_logps: Tensor | None = None,
                   log_z: "float | Tensor | None" = None) -> TargetMetrics:
    """KL(P || Q), KL(Q || P), TV and JS between the target and the model, importance-sampled."""
    kw = dict(proposal_logps=proposal_logps, log_z=log_z)
    return TargetMetrics(*(is_divergence(model_logps, target_log_scores, divergence=d, **kw)
                           for d in ("forward_kl", "reverse_kl", "total_variation", "js")))


def exact_divergence(model_log_probs: Tensor, target_log_probs: Tensor, *,
                     divergence: "str | Divergence") -> Tensor:
    """Exact D_f(P || Q) over an enumerated space, model first: (N,) log-probabilities (or
    unnormalised log scores: both are normalised here) -> scalar; differentiable in both.

    >>> logq = torch.log(torch.tensor([0.5, 0.5])); logp = torch.log(torch.tensor([0.9, 0.1]))
    >>> round(float(exact_divergence(logq, logp, divergence="forward_kl")), 4)  # KL(P || Q)
    0.3681
    """
    if target_log_probs.shape != model_log_probs.shape or target_log_probs.dim() != 1:
        raise ValueError("`target_log_probs` and `model_log_probs` must be 1-D tensors of equal shape")
    return categorical_divergence(model_log_probs[None], target_log_probs[None], divergence=divergence, reduction="sum")


@torch.no_grad()
def acceptance_rate(model_logps: Tensor, target_log_scores: Tensor, *, log_z: "float | Tensor | None" = None,
                    proposal_logps: Tensor | None = None) -> float:
    """Acceptance rate 1 / max_x P(x)/Q(x) of rejection sampling P with Q as the proposal.

    1 when Q = P, 0 when Q misses part of P's support. Given every point of an
    enumerated space (with exact ``log_z``) it is exact; from samples the max
    runs over the samples only, so it is an optimistic (upper) estimate.
    """
    if target_log_scores.shape != model_logps.shape or model_logps.dim() != 1:
        raise ValueError("`target_log_scores` and `model_logps` must be 1-D tensors of equal shape")
    lz = _log_z(target_log_scores, model_logps, proposal_logps) if log_z is None else torch.as_tensor(log_z)
    log_r = target_log_scores.double() - lz.double() - model_logps.double()
    return float(torch.exp(-log_r.max()).clamp(max=1.0))
