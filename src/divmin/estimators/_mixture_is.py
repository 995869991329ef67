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
import numbers
from typing import Sequence

import torch
from torch import Tensor

from ..divergences import Divergence, as_divergence
from ..divergences import check_float_tensor, check_real

__all__ = ["effective_sample_size", "importance_mean", "mixture_log_density", "pooled_divergence"]


def _vector(name: str, x: object, n: int | None = None, *, integers: bool = False) -> Tensor:
    """A non-empty (N,) floating (or, with ``integers``, integer) tensor (N = ``n`` when given), in float64."""
    if not (integers and isinstance(x, Tensor) and not x.is_complex()):
        check_float_tensor(name, x, ndim=1)
    elif x.dim() != 1:
        raise ValueError(f"`{name}` must have 1 dims, got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"`{name}` is empty: no sample")
    if n is not None and x.shape[0] != n:
        raise ValueError(f"`{name}` must have shape ({n},), got {tuple(x.shape)}")
    return x.detach().double()


def effective_sample_size(log_weights: Tensor) -> float:
    """Kish's normalised effective sample size (sum w)^2 / (N sum w^2) in (0, 1] of (N,) log-weights.

    Weights of zero (``-inf``) count as samples that carry nothing; all zero gives 0.

    >>> effective_sample_size(torch.log(torch.tensor([1.0, 1.0, 0.0, 0.0])))
    0.5
    """
    lw = _vector("log_weights", log_weights)
    if bool(torch.isnan(lw).any()) or bool((lw == math.inf).any()):
        raise ValueError("`log_weights` contains NaN or +inf")
    if bool((lw == -math.inf).all()):
        return 0.0
    lw = lw - lw.max()  # the ratio is scale-free; shifting keeps 2 * lw finite for log-weights near 1e308
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
    exchange has no 1/N bias. The sum is formed in log space (positive and negative parts apart), so
    a weight beyond float64's range with a small value still gives the finite mean it has. On two points,
    Q = (0.9, 0.1), one sample of each from q = (0.5, 0.5):

    >>> lq = torch.log(torch.tensor([0.9, 0.1])); lp = torch.log(torch.tensor([0.5, 0.5]))
    >>> round(importance_mean(torch.tensor([1.0, 0.0]), lq, lp), 4)  # E_Q[1{x = 0}]
    0.9
    """
    v = _vector("values", values, integers=True)
    lq, lp = _vector("model_logps", model_logps, v.shape[0]), _vector("proposal_logps", proposal_logps, v.shape[0])
    if bool(torch.isnan(lq).any() | (lq == math.inf).any()):
        raise ValueError("`model_logps` must not be NaN or +inf (a log-probability is at most 0)")
    if bool(torch.isnan(lp).any() | lp.isinf().any()):
        raise ValueError("`proposal_logps` must be finite: every sample was drawn from q, so q(x) > 0")
    lw = lq - lp
    live = lw > -math.inf  # weight-0 samples count 0 whatever their value
    if not bool(torch.isfinite(v[live]).all()):
        raise ValueError("`values` is infinite or NaN at a sample of positive weight: the mean is undefined")
    lw, v = torch.where(live, lw, -math.inf), torch.where(live, v, 0.0)
    log_pos = torch.logsumexp(lw + torch.log(v.clamp_min(0.0)), 0)
    log_neg = torch.logsumexp(lw + torch.log((-v).clamp_min(0.0)), 0)
    mean = float(torch.exp(log_pos - math.log(v.numel())) - torch.exp(log_neg - math.log(v.numel())))
    if not math.isfinite(mean):
        raise ValueError("the importance weights exp(`model_logps` - `proposal_logps`) times `values` exceed "
                         "float64's range: the mean overflows (is the proposal far from the model?)")
    return mean


def _counts(counts: object, k: int) -> list[int]:
    """K non-negative int sample counts (ints, integer NumPy scalars or a 1-D integer tensor), not all 0."""
    if isinstance(counts, Tensor):
        if counts.is_floating_point() or counts.is_complex() or counts.dim() != 1:
            raise TypeError(f"`counts` must be K ints, got a tensor of dtype {counts.dtype} and shape "
                            f"{tuple(counts.shape)}")
        counts = counts.tolist()
    if isinstance(counts, (str, bytes)) or not isinstance(counts, Sequence):
        raise TypeError(f"`counts` must be a sequence of K ints, got {type(counts).__name__}")
    if any(isinstance(c, bool) or not isinstance(c, numbers.Integral) for c in counts):
        raise TypeError(f"`counts` must hold ints (sample counts), got {list(counts)!r}")
    out = [int(c) for c in counts]
    if len(out) != k or any(c < 0 for c in out) or sum(out) == 0:
        raise ValueError(f"`counts` must be {k} non-negative sample counts, not all 0, got {out}")
    return out


def mixture_log_density(proposal_logps: Tensor, counts: Sequence[int]) -> Tensor:
    """(N,) log M(x_i) = log sum_k (n_k / N) q_k(x_i) of the pooled samples.

    Args:
        proposal_logps: (K, N) log q_k(x_i) of every pooled sample under every proposal (no NaN, no +inf).
        counts: the K sample counts n_k (how many samples each proposal drew; only their shares matter).
    """
    check_float_tensor("proposal_logps", proposal_logps, ndim=2)
    if proposal_logps.shape[1] == 0:
        raise ValueError("`proposal_logps` must be a (K, N) tensor with N >= 1 samples, got shape "
                         f"{tuple(proposal_logps.shape)}")
    if bool(proposal_logps.isnan().any() | (proposal_logps == math.inf).any()):
        raise ValueError("`proposal_logps` contains NaN or +inf (a log-probability is at most 0)")
    counts = _counts(counts, proposal_logps.shape[0])
    share = torch.tensor(counts, dtype=torch.float64, device=proposal_logps.device) / sum(counts)
    return torch.logsumexp(proposal_logps.detach().double() + share.log()[:, None], 0)


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
    div = as_divergence(divergence, "divergence", kinds=("f",))
    log_z = check_real("log_z", log_z)
    logq = _vector("model_logps", model_logps)
    n = logq.shape[0]
    scores = _vector("target_log_scores", target_log_scores, n)
    check_float_tensor("proposal_logps", proposal_logps, ndim=2)
    if proposal_logps.shape[1] != n:
        raise ValueError(f"`proposal_logps` must be (K, {n}): every pooled sample under every proposal, "
                         f"got {tuple(proposal_logps.shape)}")
    if bool(logq.isnan().any() | (logq == math.inf).any() | scores.isnan().any() | (scores == math.inf).any()):
        raise ValueError("`model_logps` and `target_log_scores` must not hold NaN or +inf")
    log_m = mixture_log_density(proposal_logps, counts)
    if sum(_counts(counts, proposal_logps.shape[0])) != n:
        raise ValueError(f"`counts` {list(counts)} must sum to the N = {n} pooled samples")
    if bool((log_m == -math.inf).any()):
        raise ValueError("a pooled sample has probability 0 under every proposal (`proposal_logps` all -inf "
                         "in its column): it cannot have been drawn from them")
    log_r = scores - log_z - logq
    f = div.f(log_r)
    # (Q / M) f(r) as sign(f) exp(log(Q / M) + log|f|): Q / M beyond float64 with f(r) = 0 (P = Q there) is 0,
    # and with a small f(r) the finite product it is
    terms = torch.sign(f) * torch.exp(logq - log_m + torch.log(f.abs()))
    # Q = 0 with f(r) = inf is 0 * inf: the perspective's limit depends on f, so refuse rather than guess
    if bool(torch.isnan(terms).any()):
        raise ValueError(f"`model_logps`: a pooled sample has Q = 0 or Q / M = 0 with an infinite f(r); "
                         "the estimate is undefined (the divergence may be infinite)")
    total = float(terms.sum() / n)
    if not math.isfinite(total) and bool(log_r.isfinite().all()):
        raise ValueError(f"{div}: the estimate overflows float64: (Q / M) f(r) is beyond its range at a sample "
                         "(`model_logps` far above the proposals' `proposal_logps`, or huge `target_log_scores`)")
    return total
