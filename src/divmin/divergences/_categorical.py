"""Closed-form f-divergences between categorical distributions given by logits.

For Q = softmax(b / T) (model) and P = softmax(a / T) (target) over the last dim,

    D_f(P || Q) = sum_x Q(x) f(P(x) / Q(x)).

Each term is evaluated on the side where the ratio is at most one: with
t = log P - log Q, ``Q f(e^t)`` when t <= 0 and ``P f*(e^-t)`` when t > 0, where
f*(u) = u f(1/u) is the perspective generator. Both only see ``s = -|t| <= 0``, so
no ratio is ever exponentiated above 1 and zero probabilities (``-inf`` logits)
give the exact limits.

The gradient is analytic. With A = P f'(r) and B = Q g(r) (g = f - r f'),

    dD/da = (A - P sum(A)) / T,      dD/db = (B - Q sum(B)) / T,

and A = F - B with F = Q f(r) the term itself, so f, g and the perspective are all
a member needs. A custom autograd function computes it chunk by chunk in the
backward pass from the saved row log-sum-exps: peak extra memory is
O(chunk_size x V) besides the gradients themselves.

On CUDA, ``backend="auto"`` (or ``"triton"``) runs the same closed form as one
Triton kernel (``_triton.py``, ``pip install "divmin[triton]"``) that streams
each row with an online log-sum-exp and allocates nothing of size (rows x V)
but the gradient; it covers every registry member and the model-side gradient
(a target that needs a gradient goes to the torch path).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import Tensor

from ._backend import check_backend, triton_terms_for
from ._base import Divergence, as_divergence
from ._checks import NonFiniteInputError, check_float_tensor, check_index_tensor

__all__ = ["categorical_divergence"]

_REDUCTIONS = ("mean", "sum", "none")


def _scaled(x: Tensor, temperature: float, dtype: torch.dtype) -> Tensor:
    x = x.to(dtype)
    return x if temperature == 1.0 else x / temperature


def _log_probs(x: Tensor, lse: Tensor, temperature: float, dtype: torch.dtype) -> Tensor:
    return _scaled(x, temperature, dtype) - lse.unsqueeze(-1)


class _CategoricalDivergence(torch.autograd.Function):
    """Rows of D(softmax(a/T) || softmax(b/T)) for 2-D a, b; analytic chunked backward."""

    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor, mask: Tensor | None, div: Divergence,
                temperature: float, chunk: int, dtype: torch.dtype) -> Tensor:
        n = a.shape[0]
        out = torch.empty(n, dtype=dtype, device=a.device)
        lse_a = torch.empty(n, dtype=dtype, device=a.device)
        lse_b = torch.empty_like(lse_a)
        for lo in range(0, n, chunk):
            hi = min(lo + chunk, n)
            ac = _scaled(a[lo:hi], temperature, dtype)
            bc = _scaled(b[lo:hi], temperature, dtype)
            lse_a[lo:hi] = torch.logsumexp(ac, dim=-1)
            lse_b[lo:hi] = torch.logsumexp(bc, dim=-1)
            f_val, _ = div.categorical_terms(ac - lse_a[lo:hi, None], bc - lse_b[lo:hi, None], with_grad=False)
            out[lo:hi] = f_val.sum(dim=-1)
        # a NaN or +inf logit, or a row with no finite logit, leaves softmax undefined: its
        # log-sum-exp is not finite. One check on (rows,) values, not on the logits themselves.
        for name, lse in (("target_logits", lse_a), ("model_logits", lse_b)):
            bad = ~torch.isfinite(lse) if mask is None else ~torch.isfinite(lse) & mask
            if bool(bad.any()):
                raise NonFiniteInputError(f"`{name}`: {int(bad.sum())} counted row(s) hold a NaN or +inf logit, or no finite "
                                 "logit, so their softmax is undefined; fix them or leave them out with `mask`")
        if mask is not None:
            out = torch.where(mask, out, torch.zeros((), dtype=dtype, device=out.device))
        ctx.save_for_backward(a, b, lse_a, lse_b, mask)
        ctx.div, ctx.temperature, ctx.chunk, ctx.dtype = div, temperature, chunk, dtype
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_rows: Tensor) -> tuple[Tensor | None, ...]:
        a, b, lse_a, lse_b, mask = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_a = torch.zeros_like(a) if need_a else None
        grad_b = torch.zeros_like(b) if need_b else None
        if not (need_a or need_b):
            return (None,) * 7
        scale = grad_rows.to(ctx.dtype) / ctx.temperature
        if mask is not None:
            scale = torch.where(mask, scale, torch.zeros_like(scale))
        for lo in range(0, a.shape[0], ctx.chunk):
            hi = min(lo + ctx.chunk, a.shape[0])
            if mask is not None and not bool(mask[lo:hi].any()):
                continue
            logp = _log_probs(a[lo:hi], lse_a[lo:hi], ctx.temperature, ctx.dtype)
            logq = _log_probs(b[lo:hi], lse_b[lo:hi], ctx.temperature, ctx.dtype)
            s = scale[lo:hi, None]
            ga, gb = _row_grads(ctx.div, logp, logq, s, need_a, need_b)
            # rows with zero upstream gradient (masked, or dropped by the caller) get exactly
            # zero, even where their own local gradient is infinite
            keep = s != 0
            _refine_overflow(ctx, a[lo:hi], b[lo:hi], s, keep, ga, gb)
            if need_a:
                grad_a[lo:hi] = torch.where(keep, ga, 0.0)
            if need_b:
                grad_b[lo:hi] = torch.where(keep, gb, 0.0)
        return grad_a, grad_b, None, None, None, None, None


def _row_grads(div: Divergence, logp: Tensor, logq: Tensor, s: Tensor, need_a: bool,
               need_b: bool) -> tuple[Tensor | None, Tensor | None]:
    """dD/da = (A - P sum A) s and dD/db = (B - Q sum B) s for a chunk of rows (module docstring)."""
    f_val, b_val = div.categorical_terms(logp, logq, with_grad=True)
    ga = gb = None
    if need_a:
        a_val = f_val - b_val  # P f'(r)
        ga = (a_val - torch.exp(logp) * a_val.sum(-1, keepdim=True)) * s
    if need_b:
        gb = (b_val - torch.exp(logq) * b_val.sum(-1, keepdim=True)) * s
    return ga, gb


def _refine_overflow(ctx: Any, a: Tensor, b: Tensor, s: Tensor, keep: Tensor, ga: Tensor | None,
                     gb: Tensor | None) -> None:
    """Recompute in float64, in place, the rows whose gradient is NaN in the working dtype.

    Members whose f grows like a power of r (Pearson, Neyman, alpha outside [0, 1]) overflow
    float32 at |log r| of about 45 to 90: their terms become inf and ``inf - inf`` gives NaN,
    although the true gradient is finite or a signed infinity. float64 holds them up to
    |log r| of about 350; beyond that the gradient cannot be formed and a ValueError says so.
    """
    grads = [g for g in (ga, gb) if g is not None]
    bad = torch.zeros(a.shape[0], dtype=torch.bool, device=a.device)
    for g in grads:
        bad |= torch.isnan(g).any(-1) & keep[:, 0]
    if ctx.dtype == torch.float64 or not bool(bad.any()):
        if bool(bad.any()):
            raise ValueError(f"categorical_divergence: the gradient of {ctx.div} overflows float64 on "
                             f"{int(bad.sum())} row(s) (log-ratios of several hundred): it cannot be represented; "
                             "raise the temperature or use a member with bounded growth (JS, Hellinger, alpha in [0, 1])")
        return
    wide = torch.float64
    a64, b64 = _scaled(a[bad], ctx.temperature, wide), _scaled(b[bad], ctx.temperature, wide)
    logp = a64 - torch.logsumexp(a64, -1, keepdim=True)
    logq = b64 - torch.logsumexp(b64, -1, keepdim=True)
    ga64, gb64 = _row_grads(ctx.div, logp, logq, s[bad].to(wide), ga is not None, gb is not None)
    for g, g64 in ((ga, ga64), (gb, gb64)):
        if g is None:
            continue
        if bool(torch.isnan(g64).any()):
            raise ValueError(f"categorical_divergence: the gradient of {ctx.div} overflows float64 on some rows "
                             "(log-ratios of several hundred): it cannot be represented; raise the temperature or "
                             "use a member with bounded growth (JS, Hellinger, alpha in [0, 1])")
        g[bad] = g64.to(g.dtype)  # values beyond the working dtype's range become signed infinities


class _TritonCategorical(torch.autograd.Function):
    """Rows of D(softmax(a/T) || softmax(b/T)) by the Triton kernel; gradient for b only.

    The forward keeps 5 floats per row (softmax statistics and sum B), so the
    backward streams each row once.
    """

    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor, weights: Tensor, terms: Any, temperature: float) -> Tensor:
        from ._triton import triton_rows

        stats = torch.empty(b.shape[0], 5, dtype=torch.float32, device=b.device)
        ctx.save_for_backward(a, b, weights, stats)
        ctx.terms, ctx.temperature = terms, temperature
        return triton_rows(terms, b, a, weights, temperature, stats=stats)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_rows: Tensor) -> tuple[Tensor | None, ...]:
        from ._triton import triton_rows

        a, b, weights, stats = ctx.saved_tensors
        if not ctx.needs_input_grad[1]:
            return (None,) * 5
        grad_b = torch.empty_like(b)
        triton_rows(ctx.terms, b, a, grad_rows.float() * weights, ctx.temperature, grad_out=grad_b, stats=stats,
                    stats_ready=True)
        return None, grad_b, None, None, None


def _validate(model_logits: Any, target_logits: Any, mask: Any, temperature: Any,
              reduction: Any, chunk_size: Any) -> Tensor | None:
    check_float_tensor("model_logits", model_logits, nonempty_last=True)
    check_float_tensor("target_logits", target_logits, nonempty_last=True)
    if target_logits.shape != model_logits.shape:
        raise ValueError(
            "`model_logits` and `target_logits` must have the same shape, "
            f"got {tuple(model_logits.shape)} and {tuple(target_logits.shape)}"
        )
    if target_logits.device != model_logits.device:
        raise ValueError(f"`model_logits` is on {model_logits.device}, `target_logits` on {target_logits.device}")
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) \
            or not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"`temperature` must be a finite number > 0, got {temperature!r}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"`reduction` must be one of {_REDUCTIONS}, got {reduction!r}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"`chunk_size` must be None or an int >= 1, got {chunk_size!r}")
    if mask is None:
        return None
    check_index_tensor("mask", mask, target_logits.shape[:-1], what="a bool (or integer 0/1)")
    return mask.to(device=target_logits.device, dtype=torch.bool)


def categorical_divergence(
    model_logits: Tensor,
    target_logits: Tensor,
    *,
    divergence: "str | Divergence" = "forward_kl",
    mask: Tensor | None = None,
    temperature: float = 1.0,
    reduction: str = "mean",
    chunk_size: int | None = None,
    backend: str = "auto",
) -> Tensor:
    """``D_f(P || Q)`` between ``Q = softmax(model_logits / T)`` and ``P = softmax(target_logits / T)``.

    The sum runs over the last dim; every leading position (token, example) is a
    row. ``D_f(P || Q) = sum_x Q(x) f(P(x)/Q(x))`` in DESIGN.md's convention. As in
    ``torch.nn.functional.kl_div(input, target)``, the model comes first and the
    target second; the value is D(target || model).

    Args:
        model_logits: ``(..., V)`` logits of the model Q (student, policy).
        target_logits: ``(..., V)`` logits of the target P (teacher, reference).
        divergence: keyword-only; a registry name, spec string (``"alpha:0.3"``) or
            :class:`Divergence`.
        mask: ``(...)`` bool; rows where it is False do not count (and get zero gradient).
        temperature: T > 0 divides both logits (no ``T^2`` factor is applied).
        reduction: ``"mean"`` over counted rows (0 if none), ``"sum"``, or ``"none"``
            for the ``(...)`` per-row values (0 at masked rows).
        chunk_size: rows processed at a time; peak extra memory is then
            O(chunk_size x V) instead of O(rows x V). None: all rows at once.
            (Not used by the Triton kernel, which needs no chunks.)
        backend: ``"auto"`` (Triton for CUDA float32/16/bf16 inputs when it is installed,
            unless the target needs a gradient), ``"torch"`` or ``"triton"``.

    Returns:
        A scalar (or ``(...)`` for ``"none"``) in float32, or float64 for float64
        inputs; half-precision inputs are accumulated in float32. Exact in log
        space: ``-inf`` logits give the true limits (infinite where the divergence
        is, e.g. forward KL when Q misses support of P). Members whose f grows like a
        power of r (Pearson, Neyman, alpha outside [0, 1]) overflow the working dtype for
        log-ratios beyond about 45 to 90 (float32): the value is then ``inf`` and the
        gradient is recomputed in float64 (cast back: finite where representable, a
        signed ``inf`` where not); past float64's range a ValueError says so, never NaN.

    >>> import torch
    >>> q = torch.zeros(1, 3); p = torch.tensor([[0.0, 1.0, 2.0]])
    >>> round(categorical_divergence(q, p, divergence="js").item(), 4)
    0.1374
    >>> # forward KL is KL(P || Q): P's log-probabilities weight the sum
    >>> lp, lq = p.log_softmax(-1), q.log_softmax(-1)
    >>> bool(torch.isclose(categorical_divergence(q, p, divergence="forward_kl"), (lp.exp() * (lp - lq)).sum()))
    True
    """
    mask = _validate(model_logits, target_logits, mask, temperature, reduction, chunk_size)
    check_backend(backend)
    div = as_divergence(divergence)
    dtype = torch.promote_types(torch.promote_types(target_logits.dtype, model_logits.dtype), torch.float32)
    lead, vocab = target_logits.shape[:-1], target_logits.shape[-1]
    a = target_logits.reshape(-1, vocab)
    b = model_logits.reshape(-1, vocab)
    flat_mask = None if mask is None else mask.reshape(-1)
    n = a.shape[0]
    terms = triton_terms_for(backend, div, b, why_not=_triton_obstacle(a, dtype))
    if terms is not None:
        weights = torch.ones(n, device=b.device) if flat_mask is None else flat_mask.float()
        rows = _TritonCategorical.apply(_unit_stride(a), _unit_stride(b), weights, terms, float(temperature))
        # the kernel gives NaN for a counted row whose softmax is undefined: refused as on the torch path
        bad = torch.isnan(rows) & (weights > 0)
        if bool(bad.any()):
            raise NonFiniteInputError(f"`model_logits` or `target_logits`: {int(bad.sum())} counted row(s) hold a "
                                      "NaN or +inf logit, or no finite logit, so their softmax is undefined; fix "
                                      "them or leave them out with `mask`")
    else:
        chunk = max(1, n if chunk_size is None else min(chunk_size, n))
        rows = _CategoricalDivergence.apply(a, b, flat_mask, div, float(temperature), chunk, dtype)
    if reduction == "none":
        return rows.reshape(lead)
    total = rows.sum()
    if reduction == "sum":
        return total
    count = n if flat_mask is None else flat_mask.sum()
    return total / (count.clamp(min=1) if isinstance(count, Tensor) else max(count, 1))


def _triton_obstacle(a: Tensor, dtype: torch.dtype) -> str | None:
    if a.requires_grad and torch.is_grad_enabled():
        return "the kernel gives no gradient for the target logits, which require one"
    if dtype == torch.float64:
        return "the kernel computes in float32 and the inputs are float64"
    return None


def _unit_stride(x: Tensor) -> Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()
