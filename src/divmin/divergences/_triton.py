"""Triton kernel for categorical f-divergences: per-row statistics only, no (rows x V) temporaries.

For rows of model logits ``zs`` (R, V_s) and target logits ``zt`` (R, V_t),
one program per row streams the row in blocks of columns, up to three times,
keeping only scalars:

1. online max and sum of exponentials of ``zs / T`` and ``zt / T`` (log-sum-exp);
2. ``sum_x F(x)`` and ``sum_x B(x)`` from the member's terms
   (``_triton_terms``), with ``log Q = zs/T - lse_s``, ``log P = zt/T - lse_t``;
3. if asked, ``dL/dzs = w (B - Q sum B) / T`` into ``g`` (which may be ``zs``
   itself: the fused KD loss overwrites its chunk of logits in place).

Nothing of size (R x V) is allocated besides the gradient: no float32 copy, no
log-softmax, no term buffers. Columns past a side's vocabulary read as ``-inf``
(zero probability). Arithmetic is float32 whatever the input dtype. Row ``i``
stores ``w_i sum_x F`` (0 where ``w_i = 0``, whatever the row holds), so rows
with weight 0 (masked, ignored labels) get loss 0 and gradient 0.

Imported only when ``triton`` is installed. On a machine without a GPU the
kernel runs under Triton's interpreter (``TRITON_INTERPRET=1``), which is how
the test suite checks it, besides compiling it for sm_80 / sm_90.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._triton_terms import triton_terms

__all__ = ["triton_rows", "triton_block_size", "interpreting", "divergence_rows_kernel", "triton_terms"]


@triton.jit
def _online_lse(m, d, x):
    """Fold a block ``x`` into a running max ``m`` and sum ``d`` of exp(x - m); all -inf stays (-inf, 0)."""
    m_new = tl.maximum(m, tl.max(x, 0))
    finite = m_new != float("-inf")
    safe = tl.where(finite, m_new, 0.0)
    scale = tl.where(finite, tl.exp(m - safe), 1.0)
    return m_new, d * scale + tl.sum(tl.where(x == float("-inf"), 0.0, tl.exp(x - safe)), 0)


@triton.jit
def divergence_rows_kernel(
    s_ptr, t_ptr, g_ptr, w_ptr, loss_ptr,  # model logits (R, n_s), target (R, n_t), gradient (R, n_s), (R,), (R,)
    s_stride, t_stride, g_stride, n_s, n_t, n_cols,  # row strides; vocabularies; n_cols = max(n_s, n_t)
    inv_temp, c0, c1, c2,  # 1/T and the member's constants
    TERMS: tl.constexpr, NEED_GRAD: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    s_row = s_ptr + row * s_stride
    t_row = t_ptr + row * t_stride
    g_row = g_ptr + row * g_stride
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
            tl.store(g_row + cols, grad.to(g_ptr.dtype.element_ty), mask=keep)


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
                temperature: float, *, grad_out: Tensor | None = None) -> Tensor:
    """Per-row ``w_i D_f(softmax(zt_i/T) || softmax(zs_i/T))`` (R,) float32; dL/dzs into ``grad_out`` if given.

    ``terms`` is :func:`triton_terms` of the member; ``wts`` (R,) are the row weights
    (0 for rows that do not count), and the gradient is that of ``sum_i`` of the
    output. ``zs``, ``zt`` and ``grad_out`` (R, V_s; may be ``zs`` itself) need a unit
    stride in their last dim.
    """
    fn, (c0, c1, c2) = terms
    rows, n_s, n_t = zs.shape[0], zs.shape[1], zt.shape[1]
    n_cols = max(n_s, n_t)
    loss = torch.empty(rows, dtype=torch.float32, device=zs.device)
    g = zs if grad_out is None else grad_out
    block = triton_block_size(n_cols)
    divergence_rows_kernel[(rows,)](
        zs, zt, g, wts, loss, zs.stride(0), zt.stride(0), g.stride(0), n_s, n_t, n_cols,
        1.0 / temperature, float(c0), float(c1), float(c2),
        TERMS=fn, NEED_GRAD=grad_out is not None, BLOCK=block, num_warps=_num_warps(block),
    )
    return loss
