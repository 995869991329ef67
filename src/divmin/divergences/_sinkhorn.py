r"""Entropic optimal transport: log-domain, batched Sinkhorn and the Sinkhorn divergence.

For weights ``a`` (n,), ``b`` (m,) on the simplex and a cost matrix ``C`` (n, m),
the entropic OT value is

.. math::

    \mathrm{OT}_\varepsilon(a, b, C) = \min_{P \in \Pi(a, b)} \langle P, C \rangle
        + \varepsilon\, \mathrm{KL}(P \,\|\, a \otimes b)
      = \max_{f, g}\ \langle f, a \rangle + \langle g, b \rangle
        - \varepsilon \langle e^{(f \oplus g - C)/\varepsilon} - 1, a \otimes b \rangle,

with the optimal plan ``P = exp((f ⊕ g - C)/eps) * (a ⊗ b)``. Sinkhorn's algorithm
(Cuturi, 2013) alternates the two closed-form maximizations of the dual, which in the
log domain read

.. math::

    f_i = -\varepsilon \log \sum_j b_j\, e^{(g_j - C_{ij})/\varepsilon}, \qquad
    g_j = -\varepsilon \log \sum_i a_i\, e^{(f_i - C_{ij})/\varepsilon}.

Working around the potentials (never with the bare ``exp(-C/eps)``) is what keeps
small ``epsilon`` finite; the iterations themselves run in scaling form around absorbed
potentials (matrix-vector products, no ``exp`` per step; :mod:`._sinkhorn_loop`).
Epsilon-scaling (annealing down to ``epsilon``) and the debiased divergence
``S = OT(a,b) - OT(a,a)/2 - OT(b,b)/2`` follow
Feydy et al. (2019).

References
----------
* M. Cuturi. Sinkhorn Distances: Lightspeed Computation of Optimal Transport. NeurIPS 2013.
* J. Feydy, T. Séjourné, F.-X. Vialard, S. Amari, A. Trouvé, G. Peyré. Interpolating
  between Optimal Transport and MMD using Sinkhorn Divergences. AISTATS 2019.
"""

from __future__ import annotations

import functools
import math
import numbers
import warnings
from typing import Callable, NamedTuple

import torch
from torch import Tensor

from ..registry import Registry
from ._sinkhorn_loop import iterate

__all__ = [
    "SinkhornConvergenceWarning",
    "SinkhornResult",
    "available_costs",
    "sinkhorn",
    "sinkhorn_divergence",
]

_GRADIENTS = ("envelope", "autodiff")
_DEFAULTS = dict(max_iter=1000, tol=1e-6, scaling=0.5, gradient="envelope", check_every=10)


class SinkhornConvergenceWarning(RuntimeWarning):
    """Sinkhorn stopped at ``max_iter`` before the marginal error fell below ``tol``."""


class SinkhornResult(NamedTuple):
    """What :func:`sinkhorn` returns (leading batch dim ``B`` absent for unbatched inputs).

    Attributes:
        cost: (B,) linear transport cost ``<P, C>`` (what POT's ``ot.sinkhorn2`` returns).
        objective: (B,) entropic OT value ``<P, C> + eps KL(P || a⊗b)``, computed as the
            dual value. Its envelope gradients are exact: ``d/dC = P``, ``d/da = f``,
            ``d/db = g`` (up to an additive constant on the simplex).
        f: (B, n) dual potential on the ``a`` side.
        g: (B, m) dual potential on the ``b`` side.
        plan: (B, n, m) transport plan ``P``.
        n_iter: number of Sinkhorn iterations run (epsilon-scaling steps included).
        converged: (B,) bool: the L1 row-marginal error fell below ``tol`` and the returned
            plan's row and column sums are within ``max(tol, sqrt(dtype eps))`` of ``a``, ``b``.
    """

    cost: Tensor
    objective: Tensor
    f: Tensor
    g: Tensor
    plan: Tensor
    n_iter: int
    converged: Tensor


# --- validation ---------------------------------------------------------------------------


def _check_float(name: str, t: Tensor) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"`{name}` must have a floating dtype, got {t.dtype}")


def _check_weights(name: str, w: Tensor, ndim: int, size: int, batch: int | None) -> None:
    if w.ndim != ndim:
        raise ValueError(f"`{name}` must have {ndim} dim(s) to match `cost`, got shape {tuple(w.shape)}")
    if w.shape[-1] != size or (batch is not None and w.shape[0] != batch):
        raise ValueError(f"`{name}` has shape {tuple(w.shape)}, incompatible with `cost`")
    # Loose in low precision: bf16 cannot even represent 1 - 1/256 exactly.
    tol = max(math.sqrt(torch.finfo(w.dtype).eps), 1e-6)
    if bool((w < 0).any()):
        raise ValueError(f"`{name}` must be nonnegative")
    if not bool(((w.sum(-1, dtype=torch.promote_types(w.dtype, torch.float32)) - 1).abs() <= tol).all()):
        raise ValueError(f"`{name}` must sum to 1 along its last dim (tolerance {tol:.1e})")


def _check_number(name: str, x, lo: float, integer: bool = False, above: bool = True) -> None:
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(x, bool) or not isinstance(x, kind):
        raise TypeError(f"`{name}` must be {'an int' if integer else 'a real number'}, got {x!r}")
    if not (math.isfinite(x) and (x > lo if above else x >= lo)):
        raise ValueError(f"`{name}` must be finite and {'>' if above else '>='} {lo}, got {x!r}")


def _validate(a, b, cost, epsilon, scaling, gradient, max_iter, check_every, tol=1e-6) -> None:
    for name, t in (("a", a), ("b", b), ("cost", cost)):
        _check_float(name, t)
    if cost.ndim not in (2, 3):
        raise ValueError(f"`cost` must have shape (n, m) or (B, n, m), got {tuple(cost.shape)}")
    batch = cost.shape[0] if cost.ndim == 3 else None
    _check_weights("a", a, cost.ndim - 1, cost.shape[-2], batch)
    _check_weights("b", b, cost.ndim - 1, cost.shape[-1], batch)
    _check_number("epsilon", epsilon, 0.0)
    _check_number("tol", tol, 0.0, above=False)
    _check_number("max_iter", max_iter, 0, integer=True)
    _check_number("check_every", check_every, 0, integer=True)
    if scaling is not None:
        _check_number("scaling", scaling, 0.0)
        if scaling > 1:
            raise ValueError(f"`scaling` must be in (0, 1] or None, got {scaling!r}")
    if not isinstance(gradient, str) or gradient not in _GRADIENTS:
        raise ValueError(f"`gradient` must be one of {_GRADIENTS}, got {gradient!r}")


def _scan_cost(a: Tensor, b: Tensor, cost: Tensor) -> tuple[Tensor, bool]:
    """Largest finite ``|C|`` per item (B,) and whether ``cost`` has +inf entries.

    +inf marks a forbidden pair (the plan puts no mass there); NaN and -inf are refused,
    as is a row or column with no finite entry against a positive weight: no plan
    with these marginals exists then. One pass over ``cost`` when it is finite.
    """
    with torch.no_grad():
        lo, hi = cost.detach().flatten(-2).aminmax(dim=-1)
        lo_all, hi_all = torch.stack([lo.min(), hi.max()]).tolist()
        if math.isnan(lo_all) or math.isnan(hi_all):
            raise ValueError("`cost` contains NaN")
        if lo_all == -math.inf:
            raise ValueError("`cost` contains -inf (a pair cannot be infinitely attractive)")
        if hi_all < math.inf:
            return torch.maximum(lo.abs(), hi.abs()), False
        allowed = cost.detach() < math.inf
        rows_ok = (allowed & (b.unsqueeze(-2) > 0)).any(-1)
        for name, ok in (("row", rows_ok), ("column", (allowed & (a.unsqueeze(-1) > 0)).any(-2))):
            if not bool(ok.all()):
                idx = tuple(int(i) for i in (~ok).nonzero()[0])
                raise ValueError(f"`cost` is +inf at every pair of {name} {idx[-1]}"
                                 f"{f' (batch item {idx[0]})' if len(idx) > 1 else ''} that has a positive weight "
                                 "on the other side: no plan with these marginals exists")
        return cost.detach().abs().masked_fill(~allowed, 0).flatten(-2).amax(-1), True


# --- the iterations -----------------------------------------------------------------------


def _safe_log(w: Tensor) -> Tensor:
    # torch.log at 0 has an infinite derivative that meets a zero softmax weight in
    # autodiff (inf * 0 = NaN); routing zeros through a constant branch avoids it.
    pos = w > 0
    return torch.where(pos, w, torch.ones_like(w)).log().masked_fill(~pos, -math.inf)


def _outputs(f, g, a, b, cost, epsilon: float, has_inf: bool):
    """Transport cost, dual objective, plan and its marginal error, differentiable in
    a, b, cost (and f, g).

    With f, g detached these are the envelope-theorem gradients of OT_eps: the
    objective's derivative is ``P`` in ``cost``, ``f + eps (1 - rowsum(P)/a)`` ≈ ``f``
    in ``a`` and ``g + eps (1 - colsum(P)/b)`` ≈ ``g`` in ``b``, equal at convergence.
    """
    ab = a.unsqueeze(-1) * b.unsqueeze(-2)
    x = (f.unsqueeze(-1) + g.unsqueeze(-2) - cost) / epsilon
    # Where a_i b_j = 0 the exponent is unconstrained by the marginals and may overflow
    # (inf * 0 = NaN); those entries of P are 0 whatever the exponent, so pin it to 0.
    plan = torch.exp(torch.where(ab > 0, x, torch.zeros_like(x))) * ab
    finite_cost = torch.where(torch.isinf(cost), 0, cost) if has_inf else cost  # forbidden: 0 * inf
    transport = (plan * finite_cost).sum((-2, -1))
    mass = plan.sum((-2, -1)) - a.sum(-1) * b.sum(-1)
    objective = (f * a).sum(-1) + (g * b).sum(-1) - epsilon * mass
    with torch.no_grad():
        err = torch.maximum((plan.sum(-1) - a).abs().sum(-1), (plan.sum(-2) - b).abs().sum(-1))
    return transport, objective, plan, err


def _warn_precision(cmax: Tensor, epsilon: float, dtype: torch.dtype, stacklevel: int) -> None:
    """Warn when rounding of ``(f + g - C) / epsilon`` alone distorts the plan by > 1%."""
    c = float(cmax.max())
    blur = c * torch.finfo(dtype).eps / epsilon
    if blur > 1e-2:
        warnings.warn(
            f"`epsilon`={epsilon:.1e} is below what {str(dtype).removeprefix('torch.')} resolves for costs up to "
            f"{c:.3g}: rounding alone moves (f + g - C)/epsilon by {blur:.2g}, so the plan is unreliable. "
            "Use float64 inputs or a larger `epsilon`.",
            SinkhornConvergenceWarning,
            stacklevel=stacklevel,
        )


def _warn_not_converged(err: Tensor, n_iter: int, tol: float, stacklevel: int) -> None:
    warnings.warn(
        f"Sinkhorn did not converge in {n_iter} iterations: L1 marginal error "
        f"{float(err.max()):.3e} > tol={tol:.1e}. Increase `max_iter`, increase `epsilon`, "
        "use float64 inputs, or loosen `tol`.",
        SinkhornConvergenceWarning,
        stacklevel=stacklevel,
    )


def sinkhorn(
    a: Tensor,
    b: Tensor,
    cost: Tensor,
    *,
    epsilon: float,
    max_iter: int = 1000,
    tol: float = 1e-6,
    scaling: float | None = 0.5,
    gradient: str = "envelope",
    check_every: int = 10,
) -> SinkhornResult:
    r"""Entropic optimal transport between weights ``a`` and ``b`` (log-domain Sinkhorn).

    Solves ``min_P <P, C> + eps KL(P || a⊗b)`` over plans with marginals ``a``, ``b``
    (module docstring for the math).

    Args:
        a: (B, n) or (n,) nonnegative weights summing to 1; zeros are allowed.
        b: (B, m) or (m,) likewise.
        cost: (B, n, m) or (n, m) cost matrix. Unbatched inputs give unbatched outputs.
            ``+inf`` marks a forbidden pair (the plan puts no mass there; every row and
            column needs a finite entry against a positive weight); NaN and ``-inf`` are refused.
        epsilon: entropic regularization > 0, in the units of ``cost``.
        max_iter: cap on iterations, epsilon-scaling steps included.
        tol: stop when the L1 error of the plan's row marginal is below ``tol``
            (column marginals are exact after each update).
        scaling: epsilon-scaling factor in (0, 1): eps starts at ``max|C| / 16`` (finite
            entries, per batch item) and is multiplied by ``scaling`` down to ``epsilon``,
            each level iterated until its marginal error is below 1e-2 (at most 100
            steps). ``None`` or 1 disables it.
        gradient: ``"envelope"`` (default): iterate under ``no_grad`` (memory flat in the
            number of iterations) and differentiate the outputs at the detached
            potentials; ``objective`` then has the exact envelope gradients
            (``P``, ``f``, ``g``) while ``cost``/``plan`` only get their partial
            derivatives. ``"autodiff"``: backpropagate through every iteration (memory
            linear in ``n_iter``); use it for exact gradients of ``cost`` or ``plan``.
        check_every: iterations between convergence checks at the final ``epsilon`` (each
            one is a host sync).
            When ``epsilon`` is far below the cost gaps between points the plan is
            nearly a permutation and the marginal error decays very slowly, though
            ``objective`` is accurate long before: expect the warning there.

    Returns:
        :class:`SinkhornResult`, in the promoted input dtype; bf16/fp16 inputs are
        computed in float32 (bf16/fp16 weights renormalized there). Warns
        :class:`SinkhornConvergenceWarning` when any batch item misses ``tol``, and when
        ``epsilon`` is below what the working dtype resolves for these costs
        (``max|C| * finfo.eps / epsilon > 1e-2``).

    Example:
        >>> a = b = torch.full((3,), 1 / 3, dtype=torch.float64)
        >>> C = (torch.arange(3.0)[:, None] - torch.arange(3.0)[None, :]).double() ** 2
        >>> res = sinkhorn(a, b, C, epsilon=0.01)
        >>> round(float(res.cost), 6), bool(res.converged)
        (0.0, True)
    """
    _validate(a, b, cost, epsilon, scaling, gradient, max_iter, check_every, tol)
    opts = dict(max_iter=max_iter, tol=tol, scaling=scaling, gradient=gradient, check_every=check_every)
    return _solve(a, b, cost, epsilon, opts, symmetric=False, stacklevel=2)


def _upcast_weights(w: Tensor, work: torch.dtype) -> Tensor:
    # bf16/fp16 rounding leaves the sum off 1 by up to ~1e-2: a marginal error no plan
    # can remove, so such weights are renormalized once in the working precision.
    return w.to(work) if torch.finfo(w.dtype).bits >= 32 else w.to(work) / w.to(work).sum(-1, keepdim=True)


def _solve(a, b, cost, epsilon, opts: dict, symmetric: bool, stacklevel: int) -> SinkhornResult:
    """:func:`sinkhorn` on validated inputs; ``stacklevel``: frames from here to the user."""
    max_iter, tol, scaling, gradient, check_every = (opts[k] for k in _DEFAULTS)
    out_dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), cost.dtype)
    work = torch.promote_types(out_dtype, torch.float32)
    a, b, cost = _upcast_weights(a, work), _upcast_weights(b, work), cost.to(work)
    unbatched = cost.ndim == 2
    if unbatched:
        a, b, cost = a.unsqueeze(0), b.unsqueeze(0), cost.unsqueeze(0)
    epsilon = float(epsilon)
    cmax, has_inf = _scan_cost(a, b, cost)
    _warn_precision(cmax, epsilon, work, stacklevel + 2)
    graph = torch.is_grad_enabled() and any(t.requires_grad for t in (a, b, cost))
    args = (cmax, epsilon, scaling, max_iter, tol, check_every, symmetric, None if graph else has_inf)
    with torch.set_grad_enabled(gradient == "autodiff" and torch.is_grad_enabled()):
        f, g, n_iter, err, outs = iterate(a, b, _safe_log(a), _safe_log(b), cost, *args)
    # Without autograd the loop already formed the plan, chunk by chunk in cache.
    transport, objective, plan, plan_err = outs if outs is not None else _outputs(f, g, a, b, cost, epsilon, has_inf)
    # The loop's test and the returned plan must agree: in too low a precision the
    # potentials can stop moving while the plan is far off its marginals.
    converged = (err < tol) & (plan_err <= max(tol, math.sqrt(torch.finfo(work).eps)))
    if not bool(converged.all()):
        _warn_not_converged(torch.maximum(err, plan_err), n_iter, tol, stacklevel + 2)
    outs = [t.to(out_dtype) for t in (transport, objective, plan, f, g)]
    transport, objective, plan, f, g = (t.squeeze(0) if unbatched else t for t in outs)
    converged = converged.squeeze(0) if unbatched else converged
    return SinkhornResult(transport, objective, f, g, plan, n_iter, converged)


# --- Sinkhorn divergence between point clouds -------------------------------------------


def _sqeuclidean(x: Tensor, y: Tensor) -> Tensor:
    # The expansion keeps memory at O(n m) instead of O(n m d); clamp undoes the
    # small negative values its cancellation can produce.
    xx = (x * x).sum(-1).unsqueeze(-1)
    yy = (y * y).sum(-1).unsqueeze(-2)
    return (xx + yy - 2 * x @ y.transpose(-1, -2)).clamp_min(0)


COSTS: Registry[Callable[[Tensor, Tensor], Tensor]] = Registry("cost")
COSTS.add("sqeuclidean", _sqeuclidean)
COSTS.add("euclidean", functools.partial(torch.cdist, p=2.0))
COSTS.add("l1", functools.partial(torch.cdist, p=1.0))


def available_costs() -> tuple[str, ...]:
    """Names accepted by ``sinkhorn_divergence(cost=...)``."""
    return tuple(COSTS.names())


def _resolve_cost(cost: str | Callable[[Tensor, Tensor], Tensor]):
    if callable(cost):
        return cost
    if cost not in COSTS:
        raise ValueError(f"unknown `cost` {cost!r}; valid names: {available_costs()}, or a callable")
    return COSTS.get(cost)


def _check_points(x: Tensor, y: Tensor) -> None:
    for name, t in (("x", x), ("y", y)):
        _check_float(name, t)
        if t.ndim not in (2, 3):
            raise ValueError(f"`{name}` must have shape (n, d) or (B, n, d), got {tuple(t.shape)}")
    if x.ndim != y.ndim or x.shape[-1] != y.shape[-1] or x.shape[:-2] != y.shape[:-2]:
        raise ValueError(f"`y` of shape {tuple(y.shape)} is incompatible with `x` of shape {tuple(x.shape)}")


def sinkhorn_divergence(
    x: Tensor,
    y: Tensor,
    *,
    a: Tensor | None = None,
    b: Tensor | None = None,
    cost: str | Callable[[Tensor, Tensor], Tensor] = "sqeuclidean",
    epsilon: float,
    **sinkhorn_kwargs,
) -> Tensor:
    r"""Debiased Sinkhorn divergence between point clouds (Feydy et al., 2019).

    ``S(a, b) = OT_eps(a, b) - OT_eps(a, a)/2 - OT_eps(b, b)/2`` with ``OT_eps`` the
    entropic objective (:attr:`SinkhornResult.objective`, i.e. including
    ``eps KL(P || a⊗b)``). S >= 0 and S = 0 iff the measures agree, for costs whose
    Gibbs kernel ``exp(-C/eps)`` is positive definite (all built-in costs); it may come
    out slightly negative at the solver's tolerance. This is not POT's
    ``empirical_sinkhorn_divergence``, which debiases the linear cost ``<P, C>``.

    Args:
        x: (n, d) or (B, n, d) support of the first measure.
        y: (m, d) or (B, m, d) support of the second.
        a, b: (B?, n), (B?, m) weights; uniform when omitted.
        cost: a name in :func:`available_costs` ("sqeuclidean" ``||x-y||^2``,
            "euclidean", "l1") or a callable ``cost(x, y) -> (B?, n, m)``.
        epsilon: entropic regularization, in the units of ``cost``.
        **sinkhorn_kwargs: forwarded to :func:`sinkhorn` (``max_iter``, ``tol``,
            ``scaling``, ``gradient``, ``check_every``).

    Returns:
        (B,) or scalar tensor, in the dtype of ``x`` (computed in at least float32).

    Example:
        >>> x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
        >>> float(sinkhorn_divergence(x, x, epsilon=0.1))
        0.0
        >>> round(float(sinkhorn_divergence(x, x + 1.0, epsilon=0.5)), 4)  # ||shift||^2
        2.0
    """
    c = _resolve_cost(cost)
    _check_points(x, y)
    out_dtype = x.dtype
    work = torch.promote_types(torch.promote_types(x.dtype, y.dtype), torch.float32)
    x, y = x.to(work), y.to(work)
    a = x.new_full(x.shape[:-1], 1 / x.shape[-2]) if a is None else a
    b = y.new_full(y.shape[:-1], 1 / y.shape[-2]) if b is None else b
    unknown = set(sinkhorn_kwargs) - set(_DEFAULTS)
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {sorted(unknown)}; valid: {list(_DEFAULTS)}")
    opts = {**_DEFAULTS, **sinkhorn_kwargs}
    c_xy = c(x, y)
    _validate(a, b, c_xy, epsilon, *(opts[k] for k in ("scaling", "gradient", "max_iter", "check_every", "tol")))
    ot_xx, ot_yy = _ot_value(a, a, c(x, x), epsilon, opts), _ot_value(b, b, c(y, y), epsilon, opts)
    return (_ot_value(a, b, c_xy, epsilon, opts) - 0.5 * (ot_xx + ot_yy)).to(out_dtype)


def _ot_value(a: Tensor, b: Tensor, cost: Tensor, epsilon: float, opts: dict) -> Tensor:
    """OT_eps(a, b); symmetric problems (a = b, C = C^T) use the averaged iteration.

    Alternating Sinkhorn is very slow there (its Jacobian tends to the identity as the
    plan tends to the identity) while the averaged map converges in a few steps. Always
    true of OT(a, a); also of OT(a, b) once y = x, which keeps S(x, x) exactly 0.
    """
    symmetric = a.shape == b.shape and cost.shape[-1] == cost.shape[-2] and torch.equal(a, b)
    if symmetric:
        # Round-off of the cost (e.g. the sqeuclidean expansion) must not block detection.
        slack = 16 * torch.finfo(cost.dtype).eps * cost.detach().abs().amax()
        symmetric = bool(((cost - cost.transpose(-1, -2)).abs() <= slack).all())
    if symmetric:
        # The plan of a symmetric problem is symmetric, so d/dC is unchanged by this.
        cost = 0.5 * (cost + cost.transpose(-1, -2))
    return _solve(a, b, cost, epsilon, opts, symmetric=symmetric, stacklevel=3).objective
