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

and A = F - B with F = Q f(r) the term itself, so a member's terms F and B
(:meth:`~divmin.Divergence.terms`: generic from f, g and the
perspective, or a member's fast path) define both its value and its gradient. A
custom autograd function walks the rows in chunks of ``chunk_size``; when a gradient
is needed it is formed in the same pass as the value, while the chunk's softmaxes
are in cache, and the backward pass only scales it by the upstream gradient. Peak
extra memory is O(chunk_size x V) besides the gradients themselves; no autograd
graph of size (rows x V) is ever built.

On CUDA, ``backend="auto"`` (or ``"triton"``) runs the same closed form as one
Triton kernel (``_triton.py``, ``pip install "divmin[triton]"``) that streams
each row with an online log-sum-exp and allocates nothing of size (rows x V)
but the gradient; it covers every member whose class has Triton terms (every registry
member: ``Divergence.triton_terms``) and the model-side gradient
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

__all__ = ["categorical_divergence", "chunk_rows_and_grads", "default_chunk_rows", "softmax_pair"]

_REDUCTIONS = ("mean", "sum", "none")


def _scaled(x: Tensor, temperature: float, dtype: torch.dtype) -> Tensor:
    x = x.to(dtype)
    return x if temperature == 1.0 else x / temperature


def default_chunk_rows(vocab: int, device: torch.device) -> int:
    """Rows per chunk when ``chunk_size`` is None: about 2^18 entries on CPU, so that a
    chunk's handful of (rows x V) temporaries stays in cache; 2^24 on accelerators."""
    return max(1, (2**18 if device.type == "cpu" else 2**24) // max(vocab, 1))


def softmax_pair(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(log_softmax(x), softmax(x))`` over the last dim; each from its own kernel, for accuracy.

    ``softmax`` rounds ``exp(x - max) / sum`` once or twice, ``exp(log_softmax(x))``
    inherits log_softmax's absolute error (~|log P| ulp) as a relative one.
    """
    return torch.log_softmax(x, dim=-1), torch.softmax(x, dim=-1)


def chunk_rows_and_grads(div: Divergence, *, model_logp: Tensor, target_logp: Tensor, model_p: Tensor,
                         target_p: Tensor, model_grad: bool, target_grad: bool
                         ) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor]:
    """Row values of D and the logit gradients of a chunk, unscaled (module docstring); model first.

    ``model_logp``, ``model_p``: the model's log-softmax and softmax (R, V); ``target_logp``,
    ``target_p``: the target's; ``model_grad``, ``target_grad``: whether the gradient with
    respect to the model's / the target's logits is wanted (keyword-only: an earlier release
    took these target first). Returns ``(rows, dD/d model * T, dD/d target * T, finite)``, the
    gradients None unless asked for; ``finite`` is False on rows whose gradient cannot be
    formed in the working dtype (a sum of B or A that is not finite: the gradient holds
    ``inf - inf`` there).
    """
    logq, logp, q, p, need_b, need_a = model_logp, target_logp, model_p, target_p, model_grad, target_grad
    f_val, b_val = div.terms(logq, logp, with_grad=need_a or need_b, model_p=q, target_p=p)
    # a row whose softmax is undefined (NaN, +inf, or no finite logit) is NaN in every entry of its
    # log_softmax; the fast terms zero 0 * inf products, so say NaN explicitly there
    rows = torch.where(torch.isnan(logp[:, 0]) | torch.isnan(logq[:, 0]), math.nan, f_val.sum(-1))
    finite = torch.ones_like(rows, dtype=torch.bool)
    ga = gb = None
    if need_b:
        sum_b = b_val.sum(-1, keepdim=True)
        gb = torch.addcmul(b_val, q, sum_b, value=-1.0)
        finite &= torch.isfinite(sum_b[:, 0])
    if need_a:
        a_val = f_val.sub_(b_val)  # P f'(r)
        sum_a = a_val.sum(-1, keepdim=True)
        ga = torch.addcmul(a_val, p, sum_a, value=-1.0)
        finite &= torch.isfinite(sum_a[:, 0])
    return rows, gb, ga, finite


_NONFINITE = ("`{}`: {} counted row(s) hold a NaN or +inf logit, or no finite logit, so their softmax is "
              "undefined; fix them or leave them out with `mask`")


def _overflow_error(div: Divergence, rows: int) -> str:
    return (f"categorical_divergence: the gradient of {div} overflows float64 on {rows} row(s) (log-ratios of "
            "several hundred): it cannot be represented; raise the temperature or use a member with bounded "
            "growth (JS, Hellinger, alpha in [0, 1])")


class _CategoricalDivergence(torch.autograd.Function):
    """Rows of D(softmax(a/T) || softmax(b/T)) for 2-D a, b; analytic gradients chunk by chunk.

    When a gradient is needed, the forward pass computes it with the values, chunk by chunk
    (the chunk's softmaxes are in cache then, and are not recomputed), into one buffer per
    input; the backward pass scales it by the upstream row gradients in place. A second
    backward through the same graph (``retain_graph``) recomputes it from the saved logits.
    """

    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor, mask: Tensor | None, div: Divergence,
                temperature: float, chunk: int, dtype: torch.dtype) -> Tensor:
        ctx.div, ctx.temperature, ctx.chunk, ctx.dtype = div, temperature, chunk, dtype
        need_a, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        rows, ctx.grads, ctx.error = _run(ctx, a, b, mask, need_a, need_b)
        ctx.save_for_backward(a, b, mask)
        return rows

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_rows: Tensor) -> tuple[Tensor | None, ...]:
        a, b, mask = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grads, error = ctx.grads, ctx.error
        ctx.grads = None  # scaled in place below: a second backward recomputes them
        if grads is None:
            _, grads, error = _run(ctx, a, b, mask, need_a, need_b)
        scale = grad_rows.to(ctx.dtype) / ctx.temperature
        if mask is not None:
            scale = torch.where(mask, scale, torch.zeros_like(scale))
        # rows the caller drops get exactly zero, even where their own gradient is infinite
        # (uncounted rows are zero already)
        zero = scale == 0 if mask is None else (scale == 0) & mask
        if error is not None and bool((error & ~zero).any()):
            raise ValueError(_overflow_error(ctx.div, int((error & ~zero).sum())))
        out = []
        for g, x in zip(grads, (a, b)):
            if g is not None:
                g.mul_(scale.to(g.dtype)[:, None])
                if bool(zero.any()):
                    g.masked_fill_(zero[:, None], 0.0)
                g = g.to(x.dtype)
            out.append(g)
        return out[0], out[1], None, None, None, None, None


def _run(ctx: Any, a: Tensor, b: Tensor, mask: Tensor | None, need_a: bool,
         need_b: bool) -> tuple[Tensor, tuple[Tensor | None, Tensor | None], Tensor | None]:
    """Rows of D and, if asked, the unscaled gradient buffers, chunk by chunk, and the rows whose
    gradient overflows float64 (None if none): backward raises if the caller uses one of them.

    Only counted rows are computed: with a mask, the chunks are gathered from the counted rows
    (a causal LM's prompt and padding positions cost nothing), and the other rows stay 0.
    """
    n, dtype, chunk = a.shape[0], ctx.dtype, ctx.chunk
    index = None if mask is None or bool(mask.all()) else torch.nonzero(mask).squeeze(1)
    counted = n if index is None else index.numel()
    rows = torch.zeros(n, dtype=dtype, device=a.device)
    # float16 cannot hold a gradient before the upstream scale shrinks it: keep those in float32
    new = torch.empty_like if index is None else torch.zeros_like
    bufs = [new(x, dtype=torch.float32 if x.dtype == torch.float16 else x.dtype) if need else None
            for x, need in ((a, need_a), (b, need_b))]
    bad_in = torch.zeros(2, dtype=torch.long, device=a.device)
    refine = torch.zeros(n, dtype=torch.bool, device=a.device)
    for lo in range(0, counted, chunk):
        sel = slice(lo, min(lo + chunk, counted)) if index is None else index[lo:lo + chunk]
        logp, p = softmax_pair(_scaled(a[sel], ctx.temperature, dtype))
        logq, q = softmax_pair(_scaled(b[sel], ctx.temperature, dtype))
        # a NaN or +inf logit, or a row with no finite logit, makes the whole log_softmax row NaN
        bad_in += torch.stack([torch.isnan(logp[:, 0]), torch.isnan(logq[:, 0])]).sum(-1)
        r, gb, ga, finite = chunk_rows_and_grads(ctx.div, model_logp=logq, target_logp=logp, model_p=q, target_p=p,
                                                  model_grad=need_b, target_grad=need_a)
        rows[sel] = r
        refine[sel] = ~finite
        for g, gc in zip(bufs, (ga, gb)):
            if g is not None:
                g[sel] = gc.to(g.dtype)  # index_put (a masked chunk) does not cast a float32 chunk to bf16
    if bool(bad_in.any()):
        name, count = next((nm, k) for nm, k in zip(("target_logits", "model_logits"), bad_in.tolist()) if k)
        raise NonFiniteInputError(_NONFINITE.format(name, count))
    error = _refine_overflow(ctx, a, b, refine, bufs) if any(g is not None for g in bufs) else None
    return rows, (bufs[0], bufs[1]), error


def _refine_overflow(ctx: Any, a: Tensor, b: Tensor, bad: Tensor, bufs: list[Tensor | None]) -> Tensor | None:
    """Recompute in float64, in place, the rows whose gradient is not finite in the working dtype.

    Members whose f grows like a power of r (Pearson, Neyman, alpha outside [0, 1]) overflow
    float32 at |log r| of about 45 to 90: their terms become inf and ``inf - inf`` gives NaN,
    although the true gradient is finite or a signed infinity. float64 holds them up to
    |log r| of about 350; beyond that the gradient cannot be formed: those rows are
    returned, and the backward pass raises if the caller's gradient uses one, never NaN.
    """
    if not bool(bad.any()):
        return None
    if ctx.dtype == torch.float64:
        return bad
    wide = torch.float64
    logp, p = softmax_pair(_scaled(a[bad], ctx.temperature, wide))
    logq, q = softmax_pair(_scaled(b[bad], ctx.temperature, wide))
    _, gb, ga, _ = chunk_rows_and_grads(ctx.div, model_logp=logq, target_logp=logp, model_p=q, target_p=p,
                                       model_grad=bufs[1] is not None, target_grad=bufs[0] is not None)
    failed = torch.zeros_like(bad)
    for g, g64 in zip(bufs, (ga, gb)):
        if g is not None:
            failed[bad] |= torch.isnan(g64).any(-1)
            g[bad] = g64.to(g.dtype)  # values beyond the working dtype's range become signed infinities
    return failed if bool(failed.any()) else None


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
            O(chunk_size x V) besides the gradient. None: about 2^18 entries per chunk on
            CPU (cache-sized: the fastest), 2^24 on accelerators.
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
        chunk = max(1, min(n, chunk_size or default_chunk_rows(vocab, b.device)))
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
