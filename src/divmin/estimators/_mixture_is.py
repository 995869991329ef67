"""Importance-sampled D_f(P || Q) from samples pooled over several proposals (balance heuristic).

Samples x_i drawn n_k at a time from proposals q_k (k = 1..K, N = sum n_k) are,
pooled, samples of the mixture M = sum_k (n_k / N) q_k (Veach & Guibas' balance
heuristic), so with P = exp(s - log Z) and r = P / Q

    D_f(P || Q) = E_M[ (Q / M) f(r) ] ~ (1 / N) sum_i (Q(x_i) / M(x_i)) f(r_i),

unbiased for a known Z. Pooling the base model a (which covers the target: P / a
is bounded for P = a (b + eps) / Z) with the model Q keeps both weights P / M
<= (N / n_a) P / a and Q / M <= N / n_Q bounded, so one estimator serves every
f: forward KL's term (Q / M) r log r = (P / M) log r, reverse KL's (Q / M) log(1/r).
A single proposal far from Q (weights Q / a with an effective sample size of
0.05% in the fdpg-lm recipe) or from P (weights P / Q on the model's own samples)
leaves one of the two heavy-tailed.

:func:`importance_mean` is the K = 1 case for any values: E_Q[v] ~ (1/N) sum_i (Q_i / q_i) v_i
with both densities normalised (autoregressive models are), unbiased; the self-normalised
form sum_i w_i v_i / sum_i w_i (:func:`divmin.eval.is_expectation`) is only consistent,
with a bias of order 1/N that grows as the weights' effective sample size falls.

:func:`effective_sample_size` is Kish's (sum w)^2 / sum w^2 over N, the share of
the N samples that the weights leave useful.

References: Veach & Guibas, "Optimally Combining Sampling Techniques for Monte
Carlo Rendering" (1995); Kish, "Survey Sampling" (1965).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from ..divergences import Divergence, as_divergence

__all__ = ["effective_sample_size", "importance_mean", "mixture_log_density", "pooled_divergence"]


def effective_sample_size(log_weights: Tensor) -> float:
    """Kish's normalised effective sample size (sum w)^2 / (N sum w^2) in (0, 1] of (N,) log-weights.

    Weights of zero (``-inf``) count as samples that carry nothing; all zero gives 0.

    >>> effective_sample_size(torch.log(torch.tensor([1.0, 1.0, 0.0, 0.0])))
    0.5
    """
    if not isinstance(log_weights, Tensor) or log_weights.dim() != 1 or log_weights.numel() == 0:
        raise ValueError("`log_weights` must be a non-empty 1-D tensor")
    lw = log_weights.detach().double()
    if bool(torch.isnan(lw).any()) or bool((lw == math.inf).any()):
        raise ValueError("`log_weights` contains NaN or +inf")
    if bool((lw == -math.inf).all()):
        return 0.0
    return float(torch.exp(2 * torch.logsumexp(lw, 0) - torch.logsumexp(2 * lw, 0)) / lw.numel())


@torch.no_grad()
def importance_mean(values: Tensor, model_logps: Tensor, proposal_logps: Tensor) -> float:
    """Unbiased E_Q[v] ~ (1/N) sum_i exp(log Q(x_i) - log q(x_i)) v_i from N samples of q (model first).

    Args:
        values: (N,) v(x_i); may hold +-inf only where the weight is 0 (those terms count 0).
        model_logps: (N,) log Q(x_i), normalised (e.g. an LM's sequence log-probability, or
            s - log Z for an energy-based target with a log Z estimate).
        proposal_logps: (N,) log q(x_i) of the distribution the samples came from.

    Unlike the self-normalised sum_i w_i v_i / sum_i w_i it needs Q and q normalised, and in
    exchange has no 1/N bias. On two points, Q = (0.9, 0.1), one sample of each from q = (0.5, 0.5):

    >>> lq = torch.log(torch.tensor([0.9, 0.1])); lp = torch.log(torch.tensor([0.5, 0.5]))
    >>> round(importance_mean(torch.tensor([1.0, 0.0]), lq, lp), 4)  # E_Q[1{x = 0}]
    0.9
    """
    if not all(isinstance(t, Tensor) for t in (values, model_logps, proposal_logps)):
        raise TypeError("`values`, `model_logps` and `proposal_logps` must be tensors")
    if values.dim() != 1 or values.numel() == 0 or model_logps.shape != values.shape \
            or proposal_logps.shape != values.shape:
        raise ValueError("`values`, `model_logps` and `proposal_logps` must be non-empty (N,) tensors, got "
                         f"{tuple(values.shape)}, {tuple(model_logps.shape)}, {tuple(proposal_logps.shape)}")
    lq, lp = model_logps.double(), proposal_logps.double()
    if bool(torch.isnan(lq).any() | torch.isnan(lp).any() | (lp == -math.inf).any()):
        raise ValueError("`model_logps` and `proposal_logps` must not be NaN, and every sample must have "
                         "q(x) > 0 (`proposal_logps` > -inf): it was drawn from q")
    w = torch.exp(lq - lp)
    terms = (w * values.double()).where(w > 0, torch.zeros_like(w))
    if not bool(torch.isfinite(terms).all()):
        raise ValueError("`values` is infinite or NaN at a sample of positive weight: the mean is undefined")
    return float(terms.mean())


def mixture_log_density(proposal_logps: Tensor, counts: Sequence[int]) -> Tensor:
    """(N,) log M(x_i) = log sum_k (n_k / N) q_k(x_i) of the pooled samples.

    Args:
        proposal_logps: (K, N) log q_k(x_i) of every pooled sample under every proposal.
        counts: the K sample counts n_k (how many samples each proposal drew; only their shares matter).
    """
    if not isinstance(proposal_logps, Tensor) or proposal_logps.dim() != 2:
        raise ValueError("`proposal_logps` must be a (K, N) tensor: every sample under every proposal")
    counts = [int(n) for n in counts]
    if len(counts) != proposal_logps.shape[0] or any(n < 0 for n in counts) or sum(counts) == 0:
        raise ValueError(f"`counts` must be {proposal_logps.shape[0]} non-negative sample counts, not all 0, "
                         f"got {counts}")
    share = torch.tensor(counts, dtype=torch.float64, device=proposal_logps.device) / sum(counts)
    return torch.logsumexp(proposal_logps.double() + share.log()[:, None], 0)


@torch.no_grad()
def pooled_divergence(model_logps: Tensor, target_log_scores: Tensor, proposal_logps: Tensor,
                      counts: Sequence[int], *, divergence: "str | Divergence", log_z: float) -> float:
    """D_f(P || Q) ~ (1/N) sum_i (Q_i / M_i) f(P_i / Q_i) over samples pooled from K proposals (model first).

    Args:
        model_logps: (N,) log Q(x_i).
        target_log_scores: (N,) unnormalised log P(x_i) = s(x_i); ``-inf`` off the target's support.
        proposal_logps: (K, N) log q_k(x_i); the model itself may be one of the proposals.
        counts: (K,) samples drawn from each proposal (in the order of the pooled samples or not).
        divergence: keyword-only; registry name or member.
        log_z: log of P's normaliser (e.g. :func:`self_normalized_log_z` on a proposal covering P).

    Exact in expectation: each x drawn from q_k with probability q_k(x) makes the mean's
    expectation sum_x M(x) (Q / M) f(r) = E_Q[f(r)]. On two points, Q = (0.5, 0.5), P = (0.9, 0.1),
    one sample of each from Q itself:

    >>> lq = torch.log(torch.tensor([0.5, 0.5]))
    >>> round(pooled_divergence(lq, torch.log(torch.tensor([0.9, 0.1])), lq[None], [2],
    ...                         divergence="forward_kl", log_z=0.0), 4)
    0.3681
    """
    div = as_divergence(divergence)
    n = model_logps.shape[-1]
    if model_logps.dim() != 1 or target_log_scores.shape != model_logps.shape or proposal_logps.shape[-1:] != (n,):
        raise ValueError("`model_logps` and `target_log_scores` must be (N,) and `proposal_logps` (K, N), "
                         f"got {tuple(model_logps.shape)}, {tuple(target_log_scores.shape)}, "
                         f"{tuple(proposal_logps.shape)}")
    if sum(int(c) for c in counts) != n:
        raise ValueError(f"`counts` {list(counts)} must sum to the N = {n} pooled samples")
    log_m = mixture_log_density(proposal_logps, counts)
    logq = model_logps.double()
    log_r = target_log_scores.double() - float(log_z) - logq
    terms = torch.exp(logq - log_m) * div.f(log_r)
    # Q = 0 with f(r) = inf is 0 * inf: the perspective's limit depends on f, so refuse rather than guess
    if bool(torch.isnan(terms).any()):
        raise ValueError(f"{div}: a pooled sample has Q = 0 or Q / M = 0 with an infinite f(r); "
                         "the estimate is undefined (the divergence may be infinite)")
    return float(terms.sum() / n)
