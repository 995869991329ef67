"""Triton kernel for the fused KD loss: per-row statistics only, gradients written in place.

For one chunk of R rows, the caller forms the student logits ``zs = h W^T``
(R, V_s) and teacher logits ``zt = h_t W_t^T`` (R, V_t) in the input dtype
(cuBLAS). One program per row then streams the row in blocks of columns,
three times, keeping only scalars:

1. online max and sum of exponentials of ``zs / T`` and ``zt / T`` (log-sum-exp);
2. ``sum_x F(x)`` and ``sum_x B(x)`` from the member's terms
   (``_triton_terms``), with ``log Q = zs/T - lse_s``, ``log P = zt/T - lse_t``;
3. ``dL/dzs = w (B - Q sum B) / T``, written over ``zs`` in place.

So besides the two logit buffers of the chunk nothing of size (R x V) is
allocated: no float32 copy, no log-softmax, no term buffers. Columns past a
side's vocabulary read as ``-inf`` (the ``"pad"`` policy; ``"truncate"`` slices
the heads before). Arithmetic is float32 whatever the input dtype. Rows whose
weight is 0 (ignored labels) get loss 0 and gradient 0.

Imported only when ``triton`` is installed. On a machine without a GPU the
kernel runs under Triton's interpreter (``TRITON_INTERPRET=1``), which is how
the test suite checks it.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._triton_terms import triton_terms

__all__ = ["triton_chunk", "triton_rows", "triton_block_size", "interpreting", "kd_rows_kernel", "triton_terms"]


@triton.jit
def _online_lse(m, d, x):
    """Fold a block ``x`` into a running max ``m`` and sum ``d`` of exp(x - m); all -inf stays (-inf, 0)."""
    m_new = tl.maximum(m, tl.max(x, 0))
    finite = m_new != float("-inf")
    safe = tl.where(finite, m_new, 0.0)
    scale = tl.where(finite, tl.exp(m - safe), 1.0)
    return m_new, d * scale + tl.sum(tl.where(x == float("-inf"), 0.0, tl.exp(x - safe)), 0)


@triton.jit
def kd_rows_kernel(
    s_ptr, t_ptr, w_ptr, loss_ptr,  # student logits (R, n_s) [overwritten by the gradient], teacher (R, n_t), (R,), (R,)
    s_stride, t_stride, n_s, n_t, n_cols,  # row strides; vocabularies; n_cols = max(n_s, n_t)
    inv_temp, c0, c1, c2,  # 1/T and the member's constants
    TERMS: tl.constexpr, NEED_GRAD: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    s_row = s_ptr + row * s_stride
    t_row = t_ptr + row * t_stride
    w = tl.load(w_ptr + row).to(tl.float32)
    ms = tl.full((), float("-inf"), tl.float32)
    mt = tl.full((), float("-inf"), tl.float32)
    ds = tl.zeros((), tl.float32)
    dt = tl.zeros((), tl.float32)
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        s = tl.load(s_row + cols, mask=cols < n_s, other=float("-inf")).to(tl.float32) * inv_temp
        t = tl.load(t_row + cols, mask=cols < n_t, other=float("-inf")).to(tl.float32) * inv_temp
        ms, ds = _online_lse(ms, ds, s)
        mt, dt = _online_lse(mt, dt, t)
    lse_s = ms + tl.log(ds)
    lse_t = mt + tl.log(dt)
    f_sum = tl.zeros((), tl.float32)
    b_sum = tl.zeros((), tl.float32)
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        lq = tl.load(s_row + cols, mask=cols < n_s, other=float("-inf")).to(tl.float32) * inv_temp - lse_s
        lp = tl.load(t_row + cols, mask=cols < n_t, other=float("-inf")).to(tl.float32) * inv_temp - lse_t
        f, b = TERMS(lp, lq, tl.exp(lp), tl.exp(lq), c0, c1, c2)
        inside = cols < n_cols
        f_sum += tl.sum(tl.where(inside, f, 0.0), 0)
        b_sum += tl.sum(tl.where(inside, b, 0.0), 0)
    counted = w != 0.0
    # a counted row keeps inf / NaN; an ignored one is exactly 0
    tl.store(loss_ptr + row, tl.where(counted, f_sum * w, 0.0))
    if NEED_GRAD:
        scale = w * inv_temp
        for start in range(0, n_s, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            keep = cols < n_s
            lq = tl.load(s_row + cols, mask=keep, other=float("-inf")).to(tl.float32) * inv_temp - lse_s
            lp = tl.load(t_row + cols, mask=cols < n_t, other=float("-inf")).to(tl.float32) * inv_temp - lse_t
            q = tl.exp(lq)
            _, b = TERMS(lp, lq, tl.exp(lp), q, c0, c1, c2)
            grad = tl.where(counted, (b - q * b_sum) * scale, 0.0)
            tl.store(s_row + cols, grad.to(s_ptr.dtype.element_ty), mask=keep)


def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_block_size(vocab: int) -> int:
    """Columns per block: the vocabulary's next power of two, at most 4096 (at least 16)."""
    return max(16, min(4096, triton.next_power_of_2(vocab)))


def _num_warps(block: int) -> int:
    # 16 columns per thread: ptxas (sm_90) then uses <= 113 registers and never spills, even for alpha
    return max(4, min(16, block // 256))


def triton_rows(terms: tuple[object, tuple[float, float, float]], zs: Tensor, zt: Tensor, wts: Tensor,
                temperature: float, need_grad: bool) -> tuple[Tensor, Tensor | None]:
    """Weighted loss sum over rows of logits ``zs`` (R, V_s), ``zt`` (R, V_t), and dL/dzs written over ``zs``.

    ``terms`` is :func:`triton_terms` of the member; ``wts`` (R,) are the row weights
    (0 for ignored rows). ``zs`` must be contiguous in its last dim; it is returned
    as the gradient when ``need_grad``.
    """
    fn, (c0, c1, c2) = terms
    rows, n_s, n_t = zs.shape[0], zs.shape[1], zt.shape[1]
    n_cols = max(n_s, n_t)
    loss = torch.empty(rows, dtype=torch.float32, device=zs.device)
    block = triton_block_size(n_cols)
    kd_rows_kernel[(rows,)](
        zs, zt, wts, loss, zs.stride(0), zt.stride(0), n_s, n_t, n_cols,
        1.0 / temperature, float(c0), float(c1), float(c2),
        TERMS=fn, NEED_GRAD=need_grad, BLOCK=block, num_warps=_num_warps(block),
    )
    return loss.sum(), (zs if need_grad else None)


def triton_chunk(terms: tuple[object, tuple[float, float, float]], hs: Tensor, ws: Tensor, wts: Tensor, ht: Tensor,
                 *, wt: Tensor, temperature: float, need_grad: bool) -> tuple[Tensor, Tensor | None]:
    """``_fused._chunk`` on Triton: the chunk's logits by matmul, then :func:`triton_rows` over them."""
    return triton_rows(terms, hs @ ws.T, ht @ wt.T, wts, temperature, need_grad)
