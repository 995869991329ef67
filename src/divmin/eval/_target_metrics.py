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

from ..divergences import Divergence, as_divergence, categorical_divergence, check_float_tensor, check_real
from ..estimators import self_normalized_log_z

__all__ = ["TargetMetrics", "acceptance_rate", "exact_divergence", "is_divergence", "is_expectation", "target_metrics"]


class TargetMetrics(NamedTuple):
    kl_target_model: float  # KL(P || Q) (forward KL: coverage of the target)
    kl_model_target: float  # KL(Q || P) (reverse KL: infinite if Q puts mass where P has none)
    tv: float  # total variation
    js: float  # Jensen-Shannon (natural log, in [0, log 2])


def _vectors(**named: object) -> int:
    """Non-empty (N,) floating tensors of one shape (None skipped); returns N."""
    n = None
    for name, x in named.items():
        if x is None:
            continue
        check_float_tensor(name, x, ndim=1)
        if x.numel() == 0:
            raise ValueError(f"`{name}` is empty: no sample")
        if n is not None and x.shape[0] != n:
            first = next(iter(named))
            raise ValueError(f"`{name}` must have the shape of `{first}` ({n},), got {tuple(x.shape)}")
        n = x.shape[0]
    return n


def _no_nan(**named: Tensor | None) -> None:
    """Log-probabilities / log-scores: no NaN, no +inf (-inf is probability 0)."""
    for name, x in named.items():
        if x is not None and bool(x.isnan().any() | (x == float("inf")).any()):
            raise ValueError(f"`{name}` contains NaN or +inf")


def _check_log_z(log_z: object) -> Tensor | None:
    return None if log_z is None else torch.tensor(check_real("log_z", log_z), dtype=torch.float64)


def _log_weights(model_logps: Tensor, proposal_logps: Tensor | None) -> Tensor:
    lw = torch.zeros_like(model_logps) if proposal_logps is None else model_logps - proposal_logps
    return torch.log_softmax(lw.double(), 0)


def _log_z(target_log_scores: Tensor, model_logps: Tensor, proposal_logps: Tensor | None) -> Tensor:
    return self_normalized_log_z(target_log_scores, model_logps if proposal_logps is None else proposal_logps)


@torch.no_grad()
def is_expectation(values: Tensor, model_logps: Tensor, proposal_logps: Tensor | None = None) -> float:
    """Self-normalised importance estimate of E_Q[values] from samples of ``proposal`` (default: Q)."""
    if not isinstance(values, Tensor) or values.is_complex():
        raise TypeError(f"`values` must be a real tensor, got {getattr(values, 'dtype', type(values).__name__)}")
    _vectors(model_logps=model_logps, proposal_logps=proposal_logps)
    _no_nan(model_logps=model_logps, proposal_logps=proposal_logps)
    if values.shape != model_logps.shape:
        raise ValueError(f"`values` {tuple(values.shape)} and `model_logps` {tuple(model_logps.shape)} differ")
    w = _log_weights(model_logps, proposal_logps).exp()
    if bool(w.isnan().any()):
        raise ValueError("`model_logps` - `proposal_logps` gives no usable weight (every sample -inf, or inf - inf)")
    # a zero weight drops its value, even an infinite one
    return float((w * values.double()).where(w > 0, torch.zeros_like(w)).sum())


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
    _vectors(model_logps=model_logps, target_log_scores=target_log_scores, proposal_logps=proposal_logps)
    _no_nan(model_logps=model_logps, target_log_scores=target_log_scores, proposal_logps=proposal_logps)
    lz = _check_log_z(log_z)
    lz = _log_z(target_log_scores, model_logps, proposal_logps) if lz is None else lz
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
    _vectors(model_log_probs=model_log_probs, target_log_probs=target_log_probs)
    return categorical_divergence(model_log_probs[None], target_log_probs[None], divergence=divergence, reduction="sum")


@torch.no_grad()
def acceptance_rate(model_logps: Tensor, target_log_scores: Tensor, *, log_z: "float | Tensor | None" = None,
                    proposal_logps: Tensor | None = None) -> float:
    """Acceptance rate 1 / max_x P(x)/Q(x) of rejection sampling P with Q as the proposal.

    1 when Q = P, 0 when Q misses part of P's support. Given every point of an
    enumerated space (with exact ``log_z``) it is exact; from samples the max
    runs over the samples only, so it is an optimistic (upper) estimate.
    """
    _vectors(model_logps=model_logps, target_log_scores=target_log_scores, proposal_logps=proposal_logps)
    _no_nan(model_logps=model_logps, target_log_scores=target_log_scores, proposal_logps=proposal_logps)
    lz = _check_log_z(log_z)
    lz = _log_z(target_log_scores, model_logps, proposal_logps) if lz is None else lz
    log_r = target_log_scores.double() - lz.double() - model_logps.double()
    return float(torch.exp(-log_r.max()).clamp(max=1.0))
