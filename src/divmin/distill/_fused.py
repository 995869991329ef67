"""Fused linear head + distillation loss, chunked over tokens: never holds (tokens x vocab) logits.

With student hidden states h (N, H), head W (V, H), teacher hidden states h_t
(N, H_t), head W_t (V_t, H_t), logits b = h W^T and a = h_t W_t^T, the loss is
:func:`~divmin.distill.token_kd_loss` on (b, a):

    L = (1/n) sum_{i counted} D_f(softmax(a_i/T) || softmax(b_i/T)).

The gradient with respect to the student logits is analytic (see
``divmin.divergences._categorical``): with Q = softmax(b/T), B = Q g(P/Q) and
g = f - r f',

    dL/db_i = w_i (B_i - Q_i sum(B_i)) / T,    w_i = [i counted] / n,

so the forward pass walks the rows in chunks of ``chunk_size``, forms the chunk's
logits, its loss rows and dL/db for the chunk, and accumulates straight away

    dL/dh[chunk] = dL/db[chunk] W,     dL/dW += dL/db[chunk]^T h[chunk].

Peak extra memory is O(chunk_size x V) plus the gradients themselves (N x H and
V x H); the backward pass only scales the stored gradients by the upstream
gradient. The teacher is a constant (its inputs get no gradient). Forward cost
is one extra pair of matmuls per chunk over a forward-only loss, the same total
as autograd through the unfused loss. Half-precision inputs are multiplied in
their dtype and everything after the matmuls is in float32.

Backends. ``"torch"`` is the chunked code above, on any device. ``"triton"``
(``pip install "divmin[triton]"``, CUDA) keeps the matmuls and replaces the
per-chunk softmaxes, terms and gradient by one kernel (``divmin.divergences._triton``) that
streams each row with an online log-sum-exp, holds only per-row scalars, and
writes dL/db over the chunk's logit buffer in place: the only (rows x V)
buffers are the two chunks of logits in the input dtype. ``"auto"`` (default)
takes Triton for CUDA tensors in float32/16/bf16 when it is installed and the
member has Triton terms (every registry member does), and torch otherwise.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import torch
from torch import Tensor

from ..divergences import Divergence, as_divergence
from ..divergences.kernels import (BACKENDS, check_backend, check_float_tensor, chunk_rows_and_grads, softmax_pair,
                                   triton_terms_for)
from ._token import VOCAB_POLICIES, check_temperature, kd_keywords, kd_signature, label_mask, normalise_sum

__all__ = ["fused_linear_kd_loss", "fused_linear_cross_entropy", "default_chunk_size", "BACKENDS"]


def default_chunk_size(vocab: int) -> int:
    """Rows per chunk so that one fp32 (rows x vocab) buffer is about 32 MiB (a power of 2)."""
    rows = max(1, (8 * 2**20) // max(vocab, 1))
    return 1 << (rows.bit_length() - 1)


def _chunk_logits(h: Tensor, w: Tensor, vocab: int, temperature: float) -> Tensor:
    """(rows, vocab) logits / T in at least float32, -inf-padded where ``w`` has fewer rows than ``vocab``."""
    z = (h @ w.T).to(torch.promote_types(h.dtype, torch.float32))
    if z.shape[-1] < vocab:
        z = torch.nn.functional.pad(z, (0, vocab - z.shape[-1]), value=-math.inf)
    return z / temperature if temperature != 1.0 else z


def _chunk(div: Divergence, hs: Tensor, ws: Tensor, wts: Tensor, ht: Tensor, *, wt: Tensor,
           temperature: float, need_grad: bool) -> tuple[Tensor, Tensor | None]:
    """Weighted loss sum of one chunk and dL/d(student logits) for the first ``ws.shape[0]`` ids."""
    vocab = max(ws.shape[0], wt.shape[0])
    logq, q = softmax_pair(_chunk_logits(hs, ws, vocab, temperature))
    with torch.no_grad():
        logp, p = softmax_pair(_chunk_logits(ht, wt, vocab, temperature))
    rows, grad, _, _ = chunk_rows_and_grads(div, model_logp=logq, target_logp=logp, model_p=q, target_p=p,
                                            model_grad=need_grad, target_grad=False)
    keep = wts != 0
    # masked rows (possibly inf/NaN) contribute exactly 0; NaN in a counted row stays NaN
    total = torch.where(keep, rows * wts, 0.0).sum()
    if not need_grad:
        return total, None
    grad = torch.where(keep[:, None], grad.mul_((wts / temperature)[:, None]), 0.0)
    return total, grad[:, : ws.shape[0]]


def _triton_chunk(terms: Any, hs: Tensor, ws: Tensor, wts: Tensor, ht: Tensor, *, wt: Tensor, temperature: float,
                  need_grad: bool) -> tuple[Tensor, Tensor | None]:
    """:func:`_chunk` on the Triton kernel: the logits by matmul, then dL/db written over them in place."""
    from ..divergences.kernels import triton_rows

    zs = hs @ ws.T  # (rows, V_s) in the input dtype; becomes the gradient
    loss = triton_rows(terms, zs, ht @ wt.T, wts, temperature, grad_out=zs if need_grad else None)
    return loss.sum(), (zs if need_grad else None)


def _chunk_loop(hs: Tensor, ws: Tensor, wts: Tensor, chunk_fn: Callable[..., Any], chunk: int,
                per_row: tuple[Tensor, ...], need_h: bool, need_w: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Loss sum of ``h W^T`` over chunks of rows, and (if asked) its gradients for h and W.

    ``chunk_fn(h[rows], W, wts[rows], *(r[rows] for r in per_row), need_grad=...)`` returns the
    chunk's weighted loss sum and dL/d(logits) for ``W``'s rows (or None).
    """
    need = need_h or need_w
    grad_h = torch.zeros_like(hs) if need_h else None
    grad_w = torch.zeros(ws.shape, dtype=torch.float32 if ws.dtype != torch.float64 else ws.dtype,
                         device=ws.device) if need_w else None
    total = torch.zeros((), dtype=torch.float64 if hs.dtype == torch.float64 else torch.float32, device=hs.device)
    for lo in range(0, hs.shape[0], chunk):
        hi = min(lo + chunk, hs.shape[0])
        c_wts = wts[lo:hi]
        if not bool((c_wts != 0).any()):
            continue
        part, g = chunk_fn(hs[lo:hi], ws, c_wts, *(r[lo:hi] for r in per_row), need_grad=need)
        total = total + part
        if g is None:
            continue
        g = g.to(hs.dtype)
        if need_h:
            grad_h[lo:hi] = g @ ws
        if need_w:
            if grad_w.dtype == hs.dtype:
                grad_w.addmm_(g.T, hs[lo:hi])
            else:
                grad_w += (g.T @ hs[lo:hi]).to(grad_w.dtype)
    return total, grad_h, grad_w


def _chunked_linear(hs: Tensor, ws: Tensor, wts: Tensor, chunk_fn: Callable[..., Any], chunk: int,
                    *per_row: Tensor) -> Tensor:
    """:func:`_chunk_loop` as a differentiable scalar; no gradient work at all when none is needed."""
    if torch.is_grad_enabled() and (hs.requires_grad or ws.requires_grad):
        return _ChunkedLinear.apply(hs, ws, wts, chunk_fn, chunk, *per_row)
    return _chunk_loop(hs, ws, wts, chunk_fn, chunk, per_row, False, False)[0]


class _ChunkedLinear(torch.autograd.Function):
    """:func:`_chunk_loop`, whose gradients are computed in the forward pass and scaled in the backward."""

    @staticmethod
    def forward(ctx: Any, hs: Tensor, ws: Tensor, wts: Tensor, chunk_fn: Callable[..., Any], chunk: int,
                *per_row: Tensor) -> Tensor:
        total, grad_h, grad_w = _chunk_loop(hs, ws, wts, chunk_fn, chunk, per_row, *ctx.needs_input_grad[:2])
        ctx.save_for_backward(grad_h, grad_w)
        ctx.w_dtype = ws.dtype
        ctx.n_rest = 3 + len(per_row)
        return total

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        grad_h, grad_w = ctx.saved_tensors
        if grad_h is not None:
            grad_h = grad_h * grad_out.to(grad_h.dtype)
        if grad_w is not None:
            grad_w = (grad_w * grad_out.to(grad_w.dtype)).to(ctx.w_dtype)
        return (grad_h, grad_w) + (None,) * ctx.n_rest


def _check_chunk(chunk_size: Any) -> None:
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"`chunk_size` must be None or an int >= 1, got {chunk_size!r}")


def fused_linear_kd_loss(
    student_hidden: Tensor,
    student_head_weight: Tensor,
    teacher_hidden: Tensor,
    teacher_head_weight: Tensor,
    **options: Any,
) -> Tensor:
    """``token_kd_loss(student_hidden @ W^T, teacher_hidden @ W_t^T, ...)`` without the full logits.

    Args:
        student_hidden: ``(..., H)`` final hidden states of the student (gradients flow here).
        student_head_weight: ``(V_s, H)`` student output projection (gradients flow here).
        teacher_hidden: ``(..., H_t)`` teacher hidden states, same leading shape (constant).
        teacher_head_weight: ``(V_t, H_t)`` teacher output projection (constant).
        options: :func:`~divmin.distill.token_kd_loss`'s keywords, with its defaults (one
            definition: `kd_keywords`): divergence, labels, ignore_index, temperature,
            num_items, vocab_policy as there (same value, same gradients), and:
        chunk_size: token rows per chunk; None picks :func:`default_chunk_size` of the vocabulary
            (torch) or about ``N H / V`` rows (triton: each of the two chunks of logits then takes
            about as much memory as the hidden states, and the matmuls stay large).
        backend: ``"auto"``, ``"torch"`` or ``"triton"`` (see the module docstring); an explicit
            ``"triton"`` that cannot run raises instead of falling back.

    Returns:
        A scalar in float32 (float64 for float64 inputs). Biases are not supported: fold a
        bias into the weight with a constant-1 hidden feature if a head has one.
    """
    kw = kd_keywords(options, "fused_linear_kd_loss")
    labels, vocab_policy, chunk_size, backend = kw["labels"], kw["vocab_policy"], kw["chunk_size"], kw["backend"]
    check_float_tensor("student_hidden", student_hidden)
    check_float_tensor("teacher_hidden", teacher_hidden)
    check_float_tensor("student_head_weight", student_head_weight, ndim=2)
    check_float_tensor("teacher_head_weight", teacher_head_weight, ndim=2)
    if student_head_weight.shape[1] != student_hidden.shape[-1]:
        raise ValueError(f"`student_head_weight` {tuple(student_head_weight.shape)} does not match hidden size "
                         f"{student_hidden.shape[-1]}")
    if teacher_head_weight.shape[1] != teacher_hidden.shape[-1]:
        raise ValueError(f"`teacher_head_weight` {tuple(teacher_head_weight.shape)} does not match hidden size "
                         f"{teacher_hidden.shape[-1]}")
    lead = student_hidden.shape[:-1]
    if teacher_hidden.shape[:-1] != lead:
        raise ValueError(f"`teacher_hidden` leading shape {tuple(teacher_hidden.shape[:-1])} differs from "
                         f"`student_hidden`' {tuple(lead)}")
    if vocab_policy not in VOCAB_POLICIES:
        raise ValueError(f"`vocab_policy` must be one of {VOCAB_POLICIES}, got {vocab_policy!r}")
    _check_chunk(chunk_size)
    check_backend(backend)
    div = as_divergence(kw["divergence"])
    temperature = check_temperature(kw["temperature"])
    ws, wt = student_head_weight, teacher_head_weight.detach()
    if vocab_policy == "truncate":
        v = min(ws.shape[0], wt.shape[0])
        ws, wt = ws[:v], wt[:v]  # extra ids: no loss, zero gradient
    hs = student_hidden.reshape(-1, student_hidden.shape[-1])
    ht = teacher_hidden.detach().reshape(-1, teacher_hidden.shape[-1]).to(device=hs.device)
    mask = label_mask(labels, kw["ignore_index"], lead, hs.device)
    flat = None if mask is None else mask.reshape(-1)
    acc = torch.float64 if hs.dtype == torch.float64 else torch.float32
    ones = torch.ones(hs.shape[0], dtype=acc, device=hs.device)
    wts = normalise_sum(ones if flat is None else flat.to(acc), flat, hs.shape[0], kw["num_items"])
    vocab = max(ws.shape[0], wt.shape[0])
    terms = triton_terms_for(backend, div, hs)
    if terms is None:
        chunk_fn = functools.partial(_chunk, div, wt=wt, temperature=temperature)
        chunk = chunk_size or default_chunk_size(vocab)
    else:
        chunk_fn = functools.partial(_triton_chunk, terms, wt=wt, temperature=temperature)
        chunk = chunk_size or max(default_chunk_size(vocab), _pow2_floor(hs.shape[0] * hs.shape[1] // vocab))
    return _chunked_linear(hs, ws, wts, chunk_fn, chunk, ht)


fused_linear_kd_loss.__signature__ = kd_signature(fused_linear_kd_loss)  # type: ignore[attr-defined]


def _chunk_ce(hs: Tensor, ws: Tensor, wts: Tensor, labels: Tensor, *,
              need_grad: bool) -> tuple[Tensor, Tensor | None]:
    """Weighted cross-entropy sum of one chunk and its logit gradient ``w (softmax - onehot)``."""
    logq = torch.log_softmax(_chunk_logits(hs, ws, ws.shape[0], 1.0), dim=-1)
    keep = wts != 0
    idx = torch.where(keep, labels, 0)[:, None]
    total = torch.where(keep, -logq.gather(-1, idx)[:, 0] * wts, 0.0).sum()
    if not need_grad:
        return total, None
    grad = torch.exp(logq).scatter_add_(-1, idx, torch.full_like(idx, -1, dtype=logq.dtype))
    return total, torch.where(keep[:, None], grad * wts[:, None], 0.0)


def fused_linear_cross_entropy(
    hidden: Tensor,
    head_weight: Tensor,
    labels: Tensor,
    *,
    ignore_index: int = -100,
    num_items: int | float | Tensor | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """``F.cross_entropy(hidden @ W^T, labels, ignore_index=...)`` without the (tokens x vocab) logits.

    The hard-label term of a distillation loss, chunked like :func:`fused_linear_kd_loss`
    (gradients ``(softmax(b) - onehot(y)) / n`` accumulated in the forward pass).

    Args:
        hidden: ``(..., H)`` hidden states (gradients flow here).
        head_weight: ``(V, H)`` output projection (gradients flow here).
        labels: ``(...)`` int targets in ``[0, V)``, or ``ignore_index`` for positions that do not count.
        num_items: the normaliser (e.g. the global token count under gradient accumulation);
            None is the local count of counted positions, as ``reduction="mean"``.
        chunk_size: rows per chunk; None picks :func:`default_chunk_size` of V.

    Returns:
        A float32 scalar (float64 for float64 inputs).

    >>> import torch.nn.functional as F
    >>> h, w = torch.randn(6, 4, dtype=torch.float64), torch.randn(9, 4, dtype=torch.float64)
    >>> y = torch.tensor([0, 3, -100, 8, 1, 1])
    >>> torch.allclose(fused_linear_cross_entropy(h, w, y, chunk_size=4), F.cross_entropy(h @ w.T, y))
    True
    """
    check_float_tensor("hidden", hidden)
    check_float_tensor("head_weight", head_weight, ndim=2)
    if labels is None:
        raise TypeError("`labels` must be an integer tensor, got None")
    if head_weight.shape[1] != hidden.shape[-1]:
        raise ValueError(f"`head_weight` {tuple(head_weight.shape)} does not match hidden size {hidden.shape[-1]}")
    _check_chunk(chunk_size)
    mask = label_mask(labels, ignore_index, hidden.shape[:-1], hidden.device).reshape(-1)
    flat = labels.reshape(-1).to(hidden.device)
    vocab = head_weight.shape[0]
    if bool(((flat[mask] < 0) | (flat[mask] >= vocab)).any()):
        raise ValueError(f"`labels` must lie in [0, {vocab}) or equal ignore_index={ignore_index}")
    hs = hidden.reshape(-1, hidden.shape[-1])
    acc = torch.float64 if hs.dtype == torch.float64 else torch.float32
    wts = normalise_sum(mask.to(acc), mask, hs.shape[0], num_items)
    return _chunked_linear(hs, head_weight, wts, _chunk_ce, chunk_size or default_chunk_size(vocab), flat)


def _pow2_floor(n: int) -> int:
    return 1 << (max(n, 1).bit_length() - 1)
