"""The DEPICT objective: auxiliary targets and D(P || Q) with a cluster-frequency prior.

Notation (divmin's: P the target, Q the model). Q is the (N, K) matrix of soft
assignments q_ik = softmax(head(z_i))_k of the clustering network; P is the
auxiliary target built from Q and then held fixed while the network trains.
The objective of Ghasedi Dizaji et al. (2017, DEPICT, eq. 3-4) in this notation:

    L(theta; P) = (1/N) sum_i D(P_i || Q_i) + D(pbar || u),   pbar_k = (1/N) sum_i p_ik,

with D = KL in the paper (any registry member here) and u the uniform prior over
the K clusters. The prior term depends on P only: it is what shapes the target
rule (for KL, minimising L over P gives the "paper" rule below) and is reported
so that the value is the paper's objective; it gives the network no gradient.

Target rules (``TARGET_RULES``), with f_k = sum_i q_ik the soft cluster frequency:

* ``"paper"``: p_ik ∝ q_ik / sqrt(f_k)  (DEPICT, eq. 7);
* ``"dec"``:   p_ik ∝ q_ik^2 / f_k      (Xie et al. 2016, DEC; DEPICT's released code).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..divergences import Divergence, as_divergence, categorical_divergence
from ..registry import Registry

__all__ = ["TARGET_RULES", "auxiliary_target", "depict_loss"]


def _paper(log_q: Tensor, log_f: Tensor) -> Tensor:
    return log_q - 0.5 * log_f


def _dec(log_q: Tensor, log_f: Tensor) -> Tensor:
    return 2.0 * log_q - log_f


# name -> unnormalised log p_ik from (log q (N, K), log f (K,))
TARGET_RULES: Registry[Callable[[Tensor, Tensor], Tensor]] = Registry("target rule")
TARGET_RULES.add("paper", _paper)
TARGET_RULES.add("dec", _dec)


def _check_probs(q: Tensor, argname: str) -> None:
    """``q`` is an (N >= 1, K >= 2) floating table of probabilities: finite, >= 0, rows summing to 1."""
    if not isinstance(q, Tensor) or not q.is_floating_point():
        raise TypeError(f"`{argname}` must be a floating torch.Tensor, got "
                        f"{getattr(q, 'dtype', type(q).__name__)}")
    if q.ndim != 2 or q.shape[0] < 1 or q.shape[1] < 2:
        raise ValueError(f"`{argname}` must have shape (N >= 1, K >= 2), got {tuple(q.shape)}")
    if not bool(torch.isfinite(q).all()) or bool((q < 0).any()):
        raise ValueError(f"`{argname}` must hold finite probabilities >= 0")
    # the rows' rounding error grows with K and the dtype's epsilon; a row summing to 2 is far outside it
    tol = max(1e-3, 4 * q.shape[1] * torch.finfo(q.dtype).eps)
    worst = float((q.double().sum(1) - 1).abs().max())
    if worst > tol:
        raise ValueError(f"`{argname}` rows must sum to 1, one is off by {worst:.3g}")


def auxiliary_target(q: Tensor, *, rule: str = "paper") -> Tensor:
    """The auxiliary target P (N, K) from soft assignments ``q`` (N, K), rows summing to 1.

    Computed in log space (p_i = softmax_k of the rule's log-score, in at least float32),
    so zeros in ``q`` give zeros in P, also for an empty cluster (f_k = 0, a column of
    zeros, e.g. a float32 softmax that underflowed): its column of P is 0 and the other
    columns are the rule on the remaining clusters. ``rule`` is a name in ``TARGET_RULES``.

    >>> auxiliary_target(torch.tensor([[0.5, 0.5], [0.5, 0.5]]), rule="dec")
    tensor([[0.5000, 0.5000],
            [0.5000, 0.5000]])
    """
    _check_probs(q, "q")
    try:
        score_rule = TARGET_RULES.get(rule)
    except ValueError as err:
        raise ValueError(f"`rule`: {err}") from None
    work = q.detach().to(torch.promote_types(q.dtype, torch.float32))
    log_q = work.log()
    log_f = torch.logsumexp(log_q, dim=0)
    # an empty cluster has log f = -inf and -inf - (-inf) is NaN: any finite stand-in works there,
    # since its scores are forced to -inf (p = 0) below whatever the rule makes of them
    log_f = torch.where(torch.isfinite(log_f), log_f, torch.zeros_like(log_f))
    scores = score_rule(log_q, log_f).masked_fill(work == 0, -math.inf)
    return torch.softmax(scores, dim=-1).to(q.dtype)


def depict_loss(model_logits: Tensor, target: Tensor, *, divergence: str | Divergence = "forward_kl",
                prior: bool = True) -> Tensor:
    """(1/N) sum_i D(P_i || Q_i) [+ D(pbar || u)], Q_i = softmax(model_logits_i), through the registry.

    Args:
        model_logits: ``(N, K)`` clustering-head logits (the model Q).
        target: ``(N, K)`` target probabilities P (e.g. :func:`auxiliary_target`; no gradient flows into it).
        divergence: any categorical registry member; ``"forward_kl"`` is the paper's KL(P || Q).
        prior: add the cluster-frequency prior D(pbar || u) (constant in the network's parameters).

    >>> t = torch.tensor([[1.0, 0.0]])
    >>> round(float(depict_loss(torch.tensor([[0.0, 0.0]]), t, prior=False)), 4)  # log 2
    0.6931
    """
    _check_probs(target, "target")
    if not isinstance(model_logits, Tensor) or not model_logits.is_floating_point():
        raise TypeError(f"`model_logits` must be a floating torch.Tensor, got "
                        f"{getattr(model_logits, 'dtype', type(model_logits).__name__)}")
    if model_logits.shape != target.shape:
        raise ValueError(f"`model_logits` must have the shape of `target` {tuple(target.shape)}, "
                         f"got {tuple(model_logits.shape)}")
    if not isinstance(prior, bool):
        raise TypeError(f"`prior` must be a bool, got {prior!r}")
    div = as_divergence(divergence, "divergence", kinds=("f",))
    target = target.detach().to(model_logits.dtype)
    loss = categorical_divergence(model_logits, target.log(), divergence=div, reduction="mean")
    if prior:
        k = target.shape[1]
        log_pbar = torch.logsumexp(target.log(), dim=0) - math.log(target.shape[0])
        uniform = torch.zeros(k, dtype=model_logits.dtype, device=model_logits.device)
        loss = loss + categorical_divergence(uniform, log_pbar, divergence=div, reduction="sum")
    return loss
