"""Sinkhorn at the numerical edges (issue 17) and the fast path's internals (issue 21).

Oracles: exact transport costs from ``ot.emd2`` / ``scipy.optimize.linear_sum_assignment``,
POT's ``sinkhorn_log`` with the forbidden pairs given a cost whose kernel underflows to 0,
and the plain batched solve for the chunked and fallback paths.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import ot
import pytest
import torch
from scipy.optimize import linear_sum_assignment

import divmin.divergences._sinkhorn_loop as loop
from divmin.divergences._sinkhorn import SinkhornConvergenceWarning, sinkhorn, sinkhorn_divergence

F64 = torch.float64
TIGHT = dict(tol=1e-12, max_iter=20000)


def _issue_problem(dtype=torch.float32):
    torch.manual_seed(0)
    cost = (torch.rand(4, 5) * 4).to(dtype)
    return torch.full((4,), 0.25, dtype=dtype), torch.full((5,), 0.2, dtype=dtype), cost


def _exact(a, b, cost) -> float:
    return float(ot.emd2(a.double().numpy(), b.double().numpy(), cost.double().numpy()))


# --- epsilon below what the dtype resolves ---------------------------------------------------


def test_float32_tiny_epsilon_warns_and_never_reports_a_wrong_plan():
    a, b, cost = _issue_problem()
    with pytest.warns(SinkhornConvergenceWarning, match=r"`epsilon`=1.0e-08 is below what float32 resolves"):
        res = sinkhorn(a, b, cost, epsilon=1e-8)
    right = torch.allclose(res.plan.sum(-1), a, atol=1e-4) and abs(float(res.cost) / _exact(a, b, cost) - 1) < 1e-3
    assert right or not bool(res.converged)  # before: converged=True, rows 0.10, cost 0.27 vs 1.11


def test_float64_tiny_epsilon_is_resolved_without_warning():
    a, b, cost = _issue_problem(F64)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        res = sinkhorn(a, b, cost, epsilon=1e-8, max_iter=2000)
    assert not any("resolves" in str(w.message) for w in rec)
    np.testing.assert_allclose(float(res.cost), _exact(a, b, cost), rtol=1e-6)


# --- small epsilon reaches the exact cost -------------------------------------------------------


@pytest.mark.parametrize(("n", "m", "seed"), [(4, 5, None), (30, 40, 0), (30, 40, 1)])
def test_small_epsilon_reaches_the_exact_transport_cost(n, m, seed):
    if seed is None:
        a, b, cost = (t.double() for t in _issue_problem())
    else:
        cost = torch.rand(n, m, generator=torch.Generator().manual_seed(seed), dtype=F64) * 4
        a, b = torch.full((n,), 1 / n, dtype=F64), torch.full((m,), 1 / m, dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SinkhornConvergenceWarning)  # L1 error 1e-6 is strict at 1e-4
        res = sinkhorn(a, b, cost, epsilon=1e-4, max_iter=1000)
    # Before: 2-5% low after 1000 iterations (one iteration per epsilon level).
    np.testing.assert_allclose(float(res.cost), _exact(a, b, cost), rtol=5e-4)
    np.testing.assert_allclose(res.plan.sum(-1).numpy(), a.numpy(), atol=1e-4)


def test_small_epsilon_square_uniform_matches_assignment():
    cost = torch.rand(25, 25, generator=torch.Generator().manual_seed(3), dtype=F64)
    a = torch.full((25,), 1 / 25, dtype=F64)
    rows, cols = linear_sum_assignment(cost.numpy())
    res = sinkhorn(a, a, cost, epsilon=1e-4)
    np.testing.assert_allclose(float(res.cost), cost.numpy()[rows, cols].mean(), rtol=1e-4)


# --- infinite costs -----------------------------------------------------------------------------


@pytest.mark.parametrize("scaling", [0.5, None])
@pytest.mark.parametrize("gradient", ["envelope", "autodiff"])
def test_plus_inf_cost_is_a_forbidden_pair(scaling, gradient):
    gen = torch.Generator().manual_seed(4)
    cost = torch.rand(6, 7, generator=gen, dtype=F64)
    forbidden = torch.rand(6, 7, generator=gen) < 0.3
    forbidden[:, 0] = False  # every row keeps an allowed column
    a = torch.rand(6, generator=gen, dtype=F64) + 0.2
    a, b = a / a.sum(), torch.full((7,), 1 / 7, dtype=F64)
    c = cost.masked_fill(forbidden, math.inf).requires_grad_()
    res = sinkhorn(a, b, c, epsilon=0.1, scaling=scaling, gradient=gradient, **TIGHT)  # before: OverflowError / NaN
    res.objective.backward()
    assert (res.plan[forbidden] == 0).all()
    assert torch.isfinite(c.grad).all() and (c.grad[forbidden] == 0).all()
    # Oracle: POT with a finite cost whose kernel exp(-C/eps) underflows to exactly 0.
    big = cost.masked_fill(forbidden, 1e4).numpy()
    plan = ot.bregman.sinkhorn_log(a.numpy(), b.numpy(), big, 0.1, stopThr=1e-14, numItermax=100000)
    np.testing.assert_allclose(res.plan.detach().numpy(), plan, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(res.cost.item(), (plan * cost.numpy()).sum(), rtol=1e-6)


@pytest.mark.parametrize("scaling", [0.5, None])
def test_only_the_diagonal_allowed_costs_zero(scaling):
    cost = torch.full((3, 3), math.inf, dtype=F64).fill_diagonal_(0.0)
    a = torch.full((3,), 1 / 3, dtype=F64)
    res = sinkhorn(a, a, cost, epsilon=0.1, scaling=scaling)
    assert float(res.cost) == 0.0 and bool(res.converged)  # before: NaN with scaling=None
    torch.testing.assert_close(res.plan, torch.diag(a))


@pytest.mark.parametrize(
    ("value", "match"),
    [(-math.inf, r"`cost` contains -inf"), (math.nan, r"`cost` contains NaN")],
)
def test_minus_inf_and_nan_cost_refused(value, match):
    cost = torch.rand(3, 4, dtype=F64)
    cost[1, 2] = value
    with pytest.raises(ValueError, match=match):
        sinkhorn(torch.full((3,), 1 / 3, dtype=F64), torch.full((4,), 0.25, dtype=F64), cost, epsilon=0.1)


def test_a_row_with_nowhere_to_go_is_refused():
    cost = torch.rand(2, 3, 4, dtype=F64)
    cost[1, 2, :3] = math.inf  # column 3 is allowed but has no weight
    b = torch.tensor([[0.2, 0.3, 0.5, 0.0]] * 2, dtype=F64)
    with pytest.raises(ValueError, match=r"`cost` is \+inf at every pair of row 2 \(batch item 1\)"):
        sinkhorn(torch.full((2, 3), 1 / 3, dtype=F64), b, cost, epsilon=0.1)


# --- argument checking -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (dict(epsilon=True), TypeError, "`epsilon`"),
        (dict(epsilon=math.inf), ValueError, "`epsilon`"),
        (dict(tol=-1), ValueError, "`tol`"),
        (dict(tol=math.nan), ValueError, "`tol`"),
        (dict(tol="1e-6"), TypeError, "`tol`"),
        (dict(max_iter=2.5), TypeError, "`max_iter`"),
        (dict(max_iter=True), TypeError, "`max_iter`"),
        (dict(check_every=2.5), TypeError, "`check_every`"),
        (dict(check_every=0), ValueError, "`check_every`"),
        (dict(scaling="0.5"), TypeError, "`scaling`"),
        (dict(scaling=True), TypeError, "`scaling`"),
        (dict(scaling=math.nan), ValueError, "`scaling`"),
        (dict(gradient=["envelope"]), ValueError, "`gradient`"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, exc, match):
    a, b = torch.full((3,), 1 / 3, dtype=F64), torch.full((4,), 0.25, dtype=F64)
    args = dict(epsilon=0.1) | kwargs
    with pytest.raises(exc, match=match):
        sinkhorn(a, b, torch.rand(3, 4, dtype=F64), **args)


def test_divergence_checks_tol_too():
    x = torch.rand(4, 2, dtype=F64)
    with pytest.raises(ValueError, match="`tol`"):
        sinkhorn_divergence(x, x + 1, epsilon=0.1, tol=math.nan)


# --- the fast path's internals -----------------------------------------------------------------


def _batch(B=5, n=9, m=11, seed=0):
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(B, n, generator=gen, dtype=F64) + 0.1
    b = torch.rand(B, m, generator=gen, dtype=F64) + 0.1
    cost = torch.rand(B, n, m, generator=gen, dtype=F64) * torch.linspace(0.5, 3, B, dtype=F64)[:, None, None]
    return a / a.sum(-1, keepdim=True), b / b.sum(-1, keepdim=True), cost


# chunks of two items with a contiguous K~^T copy; chunks of one "out of cache" (K~^T a view)
@pytest.mark.parametrize("cache_bytes", [2 * 9 * 11 * 8, 1])
def test_cache_chunks_solve_each_item_like_alone(monkeypatch, cache_bytes):
    a, b, cost = _batch()
    monkeypatch.setattr(loop, "_CACHE_BYTES", cache_bytes)
    res = sinkhorn(a, b, cost, epsilon=0.05, **TIGHT)
    alone = [sinkhorn(a[i], b[i], cost[i], epsilon=0.05, **TIGHT) for i in range(5)]
    assert res.n_iter == max(r.n_iter for r in alone)
    for i, r in enumerate(alone):
        torch.testing.assert_close(res.plan[i], r.plan, rtol=1e-8, atol=1e-13)
        pot = ot.sinkhorn2(a[i].numpy(), b[i].numpy(), cost[i].numpy(), 0.05, method="sinkhorn_log",
                           stopThr=1e-14, numItermax=100000)
        np.testing.assert_allclose(float(res.cost[i]), float(pot), rtol=1e-7)


def test_nonfinite_scalings_fall_back_to_log_steps(monkeypatch):
    a, b, cost = _batch(B=2)
    ref = sinkhorn(a, b, cost, epsilon=0.05, **TIGHT)
    step = loop._Scalings.step
    calls = []

    def broken(self):  # one kernel product comes back as inf, as when a row of K~ underflows
        step(self)
        calls.append(1)
        if len(calls) == 3:
            self.s = torch.full_like(self.s, math.inf)

    monkeypatch.setattr(loop._Scalings, "step", broken)
    res = sinkhorn(a, b, cost, epsilon=0.05, **TIGHT)
    assert bool(res.converged.all())
    torch.testing.assert_close(res.plan, ref.plan, rtol=1e-8, atol=1e-13)


def _saved_bytes(gradient: str, max_iter: int) -> int:
    """Bytes autograd keeps for the backward pass (the memory that grows with iterations)."""
    a, b, cost = _batch(B=1, n=20, m=20)
    cost = cost.requires_grad_()
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), pytest.warns(SinkhornConvergenceWarning):
        sinkhorn(a, b, cost, epsilon=1e-3, max_iter=max_iter, tol=0.0, gradient=gradient).objective.backward()
    return total


def test_envelope_gradient_memory_is_flat_in_iterations():
    assert _saved_bytes("envelope", 20) == _saved_bytes("envelope", 200)
    assert _saved_bytes("autodiff", 200) > 5 * _saved_bytes("autodiff", 20)
