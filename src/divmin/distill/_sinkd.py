r"""SinKD: Sinkhorn distance between a batch of student and teacher predictions.

With q_i = softmax(s_i / T) (the student, DESIGN.md's model Q, i = 1..B) and
p_j = softmax(t_j / T) (the teacher, the target P), the cost between the two
batches is the L1 distance C_ij = ||q_i - p_j||_1, and the loss is an entropic optimal-transport cost
between the uniform measures on {p_i} and {q_j}, epsilon-regularised.

``mode="reference"`` reproduces the SinKD research code's computation (Cui et al.):
K = exp(-C / eps), then ``n_iters`` times "divide every row of K by its sum, then
every column by its sum" (plain domain), loss = sum_ij K_ij C_ij, differentiated
by autograd through the loop. After a column step the columns of K sum to 1, so
K / B is a Sinkhorn plan with marginals 1/B and the loss is B times the plan's
transport cost; the research code's factor 0.001 is *not* applied here (put it in
``DistillConfig.sinkd_weight``). With eps = 0.1 and L1 costs in [0, 2] the
kernel entries reach exp(-20): fine in float32, but smaller eps underflows,
which is what the log mode is for.

``mode="log"`` is the principled version on :func:`divmin.sinkhorn`: log-domain
iterations to tolerance with epsilon-scaling, uniform marginals 1/B, envelope
gradients (no backpropagation through the loop), returning the entropic OT value
OT_eps = <P, C> + eps KL(P || a x b) (:attr:`divmin.SinkhornResult.objective`);
``debias=True`` returns the Sinkhorn divergence
S = OT_eps(q, p) - OT_eps(q, q)/2 - OT_eps(p, p)/2 (:func:`divmin.sinkhorn_divergence`),
which is 0 when the student's batch of predictions equals the teacher's.

Reference: X. Cui, Y. Qin, Y. Gao, E. Zhang, Z. Xu, T. Wu, K. Li, X. Sun, W. Zhou,
H. Li, Sinkhorn Distance Minimization for Knowledge Distillation (LREC-COLING 2024).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor

from ..divergences import sinkhorn, sinkhorn_divergence
from ..registry import Registry
from ._token import check_temperature

__all__ = ["SINKD_MODES", "sinkd_loss"]

# sinkd_loss's `mode` by name: fn(q (B, C), p (B, C), cost (B, B), epsilon, n_iters, debias, max_iter, tol) -> loss
SINKD_MODES: Registry[Callable[..., Tensor]] = Registry("SinKD mode")


def _reference(cost: Tensor, epsilon: float, n_iters: int) -> Tensor:
    kernel = torch.exp(-cost / epsilon)
    for _ in range(n_iters):
        kernel = kernel / kernel.sum(dim=1, keepdim=True)
        kernel = kernel / kernel.sum(dim=0, keepdim=True)
    return (kernel * cost).sum()


def _check_args(student_logits: Any, teacher_logits: Any, epsilon: Any, n_iters: Any, mode: Any) -> None:
    for name, x in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        if not isinstance(x, Tensor):
            raise TypeError(f"`{name}` must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"`{name}` must have a floating dtype, got {x.dtype}")
        if x.ndim != 2 or x.shape[0] < 1:
            raise ValueError(f"`{name}` must have shape (B, C) with B >= 1, got {tuple(x.shape)}")
    if student_logits.shape[1] != teacher_logits.shape[1]:
        raise ValueError(f"`student_logits` and `teacher_logits` need the same number of classes, got "
                         f"{student_logits.shape[1]} and {teacher_logits.shape[1]}")
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not (math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"`epsilon` must be a finite number > 0, got {epsilon!r}")
    if isinstance(n_iters, bool) or not isinstance(n_iters, int) or n_iters < 1:
        raise ValueError(f"`n_iters` must be an int >= 1, got {n_iters!r}")
    try:
        SINKD_MODES.get(mode)
    except ValueError as err:
        raise ValueError(f"`mode`: {err}") from None


def sinkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    epsilon: float = 0.1,
    n_iters: int = 20,
    temperature: float = 2.0,
    mode: str = "reference",
    debias: bool = False,
    max_iter: int = 1000,
    tol: float = 1e-6,
) -> Tensor:
    """Sinkhorn loss between the batch of student predictions and the teacher's (module docstring).

    Args:
        student_logits: ``(B, C)`` student logits (gradients flow here).
        teacher_logits: ``(B, C)`` teacher logits (a constant).
        epsilon: entropic regularisation, in units of the L1 cost (which lies in [0, 2]).
        n_iters: row-then-column normalisation rounds (``mode="reference"`` only).
        temperature: T > 0; predictions are ``softmax(logits / T)``.
        mode: a name in ``SINKD_MODES``: ``"reference"`` (the research code's plain-domain loop) or ``"log"``.
        debias: ``mode="log"`` only: return the debiased Sinkhorn divergence.
        max_iter, tol: ``mode="log"`` only: forwarded to :func:`divmin.sinkhorn`.

    Returns:
        A scalar, float32 (float64 for float64 inputs). Memory and time are O(B^2 C).
    """
    _check_args(student_logits, teacher_logits, epsilon, n_iters, mode)
    temperature = check_temperature(temperature)
    if debias and mode != "log":
        raise ValueError("`debias=True` needs mode='log'")
    dtype = torch.promote_types(torch.promote_types(student_logits.dtype, teacher_logits.dtype), torch.float32)
    q = torch.softmax(student_logits.to(dtype) / temperature, dim=-1)  # model Q's predictions, (B, C)
    p = torch.softmax(teacher_logits.detach().to(dtype=dtype, device=q.device) / temperature, dim=-1)  # target P
    cost = torch.cdist(q, p, p=1.0)  # (B_student, B_teacher)
    return SINKD_MODES.get(mode)(q, p, cost, float(epsilon), n_iters, debias, max_iter, tol)


@SINKD_MODES.register("reference")
def _reference_mode(q: Tensor, p: Tensor, cost: Tensor, epsilon: float, n_iters: int, debias: bool,
                    max_iter: int, tol: float) -> Tensor:
    return _reference(cost, epsilon, n_iters)


@SINKD_MODES.register("log")
def _log_mode(q: Tensor, p: Tensor, cost: Tensor, epsilon: float, n_iters: int, debias: bool,
              max_iter: int, tol: float) -> Tensor:
    if debias:
        return sinkhorn_divergence(q, p, cost="l1", epsilon=epsilon, max_iter=max_iter, tol=tol)
    uniform_q = q.new_full((q.shape[0],), 1.0 / q.shape[0])
    uniform_p = q.new_full((p.shape[0],), 1.0 / p.shape[0])
    return sinkhorn(uniform_q, uniform_p, cost, epsilon=epsilon, max_iter=max_iter, tol=tol).objective
