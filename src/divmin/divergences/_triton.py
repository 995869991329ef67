"""Triton kernel for categorical f-divergences: per-row statistics only, no (rows x V) temporaries.

For rows of model logits ``zs`` (R, V_s) and target logits ``zt`` (R, V_t),
one program per row streams the row in blocks of columns, up to three times,
keeping only scalars:

1. online max and sum of exponentials of ``zs / T`` and ``zt / T`` (log-sum-exp);
2. ``sum_x F(x)`` and ``sum_x B(x)`` from the member's terms
   (``Divergence.triton_terms``), with ``log Q = zs/T - lse_s``, ``log P = zt/T - lse_t``;
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
import struct

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["triton_rows", "triton_block_size", "interpreting", "divergence_rows_kernel"]


@triton.jit
def _online_lse(m, d, x):
    """Fold a block ``x`` into a running max ``m`` and sum ``d`` of exp(x - m); all -inf stays (-inf, 0)."""
    m_new = tl.maximum(m, tl.max(x, 0))
    finite = m_new != float("-inf")
    safe = tl.where(finite, m_new, 0.0)
    scale = tl.where(finite, tl.exp(m - safe), 1.0)
    return m_new, d * scale + tl.sum(tl.where(x == float("-inf"), 0.0, tl.exp(x - safe)), 0)


@triton.jit
def _log_probs(row_ptr, cols, n, inv_temp, m, log_d):
    """log-softmax of one block from the row's max ``m`` and log-sum ``log_d`` (columns >= n are -inf)."""
    x = tl.load(row_ptr + cols, mask=cols < n, other=float("-inf")).to(tl.float32) * inv_temp
    return (x - m) - log_d  # in this order: no rounding at the scale of the log-sum-exp


@triton.jit
def divergence_rows_kernel(
    s_ptr, t_ptr, g_ptr, w_ptr, loss_ptr, stats_ptr,  # model (R, n_s), target (R, n_t), grad (R, n_s), (R,), (R,), (R, 5)
    s_stride, t_stride, g_stride, n_s, n_t, n_cols,  # row strides; vocabularies; n_cols = max(n_s, n_t)
    inv_temp, c0, c1, c2,  # 1/T and the member's constants
    TERMS: tl.constexpr, NEED_GRAD: tl.constexpr, STATS: tl.constexpr, BLOCK: tl.constexpr,
):
    # STATS: 0 = none, 1 = store (max, log-sum for both sides, sum B) after pass 2,
    # 2 = load them and skip passes 1-2 (a backward pass after a forward that stored them)
    row = tl.program_id(0).to(tl.int64)
    s_row = s_ptr + row * s_stride
    t_row = t_ptr + row * t_stride
    w = tl.load(w_ptr + row).to(tl.float32)
    if STATS == 2:
        ms = tl.load(stats_ptr + row * 5)
        lds = tl.load(stats_ptr + row * 5 + 1)
        mt = tl.load(stats_ptr + row * 5 + 2)
        ldt = tl.load(stats_ptr + row * 5 + 3)
        b_sum = tl.load(stats_ptr + row * 5 + 4)
    else:
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
        lds = tl.log(ds)
        ldt = tl.log(dt)
        f_sum = tl.zeros((), tl.float32)
        b_sum = tl.zeros((), tl.float32)
        for start in range(0, n_cols, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            lq = _log_probs(s_row, cols, n_s, inv_temp, ms, lds)
            lp = _log_probs(t_row, cols, n_t, inv_temp, mt, ldt)
            f, b = TERMS(lq, lp, tl.exp(lq), tl.exp(lp), c0, c1, c2)
            inside = cols < n_cols
            f_sum += tl.sum(tl.where(inside, f, 0.0), 0)
            b_sum += tl.sum(tl.where(inside, b, 0.0), 0)
        # a row without a finite logit (or with NaN) is NaN, as on the torch path, never a finite or inf
        f_sum += (ms + lds + mt + ldt) * 0.0
        # a counted row keeps inf / NaN; an ignored one is exactly 0
        tl.store(loss_ptr + row, tl.where(w != 0.0, f_sum * w, 0.0))
        if STATS == 1:
            tl.store(stats_ptr + row * 5, ms)
            tl.store(stats_ptr + row * 5 + 1, lds)
            tl.store(stats_ptr + row * 5 + 2, mt)
            tl.store(stats_ptr + row * 5 + 3, ldt)
            tl.store(stats_ptr + row * 5 + 4, b_sum)
    if NEED_GRAD:
        g_row = g_ptr + row * g_stride
        scale = w * inv_temp
        for start in range(0, n_s, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            lq = _log_probs(s_row, cols, n_s, inv_temp, ms, lds)
            lp = _log_probs(t_row, cols, n_t, inv_temp, mt, ldt)
            q = tl.exp(lq)
            _, b = TERMS(lq, lp, q, tl.exp(lp), c0, c1, c2)
            grad = tl.where(w != 0.0, (b - q * b_sum) * scale, 0.0)
            tl.store(g_row + cols, grad.to(g_ptr.dtype.element_ty), mask=cols < n_s)


def _f32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", float(x)))[0]


def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_block_size(vocab: int) -> int:
    """Columns per block: the vocabulary's next power of two, at most ``kernels.MAX_BLOCK`` (at least 16)."""
    from . import kernels  # read at call time: the cap is a public knob

    return max(16, min(kernels.MAX_BLOCK, triton.next_power_of_2(vocab)))


def _num_warps(block: int) -> int:
    # 16 columns per thread: ptxas (sm_90) then uses <= 113 registers and never spills, even for alpha
    return max(4, min(16, block // 256))


def triton_rows(terms: tuple[object, tuple[float, float, float]], zs: Tensor, zt: Tensor, wts: Tensor,
                temperature: float, *, grad_out: Tensor | None = None, stats: Tensor | None = None,
                stats_ready: bool = False) -> Tensor:
    """Per-row ``w_i D_f(softmax(zt_i/T) || softmax(zs_i/T))`` (R,) float32; dL/dzs into ``grad_out`` if given.

    ``terms`` is the member's ``triton_terms()``; ``wts`` (R,) are the row weights
    (0 for rows that do not count), and the gradient is that of ``sum_i`` of the
    output. ``zs``, ``zt`` and ``grad_out`` (R, V_s; may be ``zs`` itself) need a unit
    stride in their last dim. ``stats`` (R, 5) float32: filled with the rows' softmax
    statistics and sum of B, or, with ``stats_ready``, read from a previous call on the
    same logits, so that a gradient-only call streams each row once (the returned
    values are then not computed).
    """
    fn, consts = terms
    # a GPU launch passes scalars as float32: round here so that the interpreter sees the same values
    c0, c1, c2, inv_temp = (_f32(c) for c in (*consts, 1.0 / temperature))
    rows, n_s, n_t = zs.shape[0], zs.shape[1], zt.shape[1]
    n_cols = max(n_s, n_t)
    loss = torch.zeros(rows, dtype=torch.float32, device=zs.device)
    g = zs if grad_out is None else grad_out
    mode = 0 if stats is None else (2 if stats_ready else 1)
    block = triton_block_size(n_cols)
    divergence_rows_kernel[(rows,)](
        zs, zt, g, wts, loss, loss if stats is None else stats, zs.stride(0), zt.stride(0), g.stride(0),
        n_s, n_t, n_cols, inv_temp, c0, c1, c2,
        TERMS=fn, NEED_GRAD=grad_out is not None, STATS=mode, BLOCK=block, num_warps=_num_warps(block),
    )
    return loss
