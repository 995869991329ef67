"""Tests for log-domain Sinkhorn and the Sinkhorn divergence (oracle: POT)."""

from __future__ import annotations

import warnings

import numpy as np
import ot
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from divmin.divergences._sinkhorn import (
    SinkhornConvergenceWarning,
    SinkhornResult,
    available_costs,
    sinkhorn,
    sinkhorn_divergence,
)

F64 = torch.float64
TIGHT = dict(tol=1e-12, max_iter=20000)


def _simplex(n: int, gen: torch.Generator, batch: tuple[int, ...] = ()) -> torch.Tensor:
    w = torch.rand(*batch, n, generator=gen, dtype=F64) + 0.05
    return w / w.sum(-1, keepdim=True)


def _problem(n: int, m: int, seed: int, batch: tuple[int, ...] = ()):
    gen = torch.Generator().manual_seed(seed)
    a, b = _simplex(n, gen, batch), _simplex(m, gen, batch)
    cost = torch.rand(*batch, n, m, generator=gen, dtype=F64) * 2
    return a, b, cost


def _pot_plan(a, b, cost, eps):
    return ot.bregman.sinkhorn_log(a.numpy(), b.numpy(), cost.numpy(), eps, stopThr=1e-14, numItermax=100000)


def _entropic_value(plan: np.ndarray, a, b, cost) -> float:
    """<P, C> + eps KL(P || a⊗b) from a plan, independent of our dual formula (no eps)."""
    ab = np.outer(a.numpy(), b.numpy())
    pos = plan > 0
    return float((plan * cost.numpy()).sum()), float((plan[pos] * np.log(plan[pos] / ab[pos])).sum())


# --- agreement with POT --------------------------------------------------------------------


@pytest.mark.parametrize(("n", "m", "eps", "seed"), [(5, 7, 1.0, 0), (8, 6, 0.1, 1), (10, 10, 0.05, 2), (1, 4, 0.3, 3)])
def test_matches_pot(n, m, eps, seed):
    a, b, cost = _problem(n, m, seed)
    res = sinkhorn(a, b, cost, epsilon=eps, **TIGHT)
    plan = _pot_plan(a, b, cost, eps)
    pot_cost = ot.sinkhorn2(a.numpy(), b.numpy(), cost.numpy(), eps, method="sinkhorn_log", stopThr=1e-14, numItermax=100000)
    linear, kl = _entropic_value(plan, a, b, cost)
    assert bool(res.converged)
    np.testing.assert_allclose(res.cost.item(), float(pot_cost), rtol=1e-5)
    np.testing.assert_allclose(res.plan.numpy(), plan, rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(res.objective.item(), linear + eps * kl, rtol=1e-5)


def test_batched_equals_per_item_and_shapes():
    a, b, cost = _problem(6, 4, seed=7, batch=(3,))
    cost = cost * torch.tensor([0.1, 1.0, 10.0], dtype=F64)[:, None, None]  # per-item eps0 matters
    res = sinkhorn(a, b, cost, epsilon=0.2, **TIGHT)
    assert isinstance(res, SinkhornResult)
    assert res.f.shape == (3, 6) and res.g.shape == (3, 4) and res.plan.shape == (3, 6, 4)
    assert res.cost.shape == res.objective.shape == res.converged.shape == (3,)
    assert isinstance(res.n_iter, int) and res.converged.dtype == torch.bool
    for i in range(3):
        one = sinkhorn(a[i], b[i], cost[i], epsilon=0.2, **TIGHT)
        assert one.plan.shape == (6, 4) and one.cost.shape == () and one.converged.shape == ()
        torch.testing.assert_close(res.plan[i], one.plan, rtol=1e-8, atol=1e-12)
        torch.testing.assert_close(res.objective[i], one.objective, rtol=1e-9, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 6),
    m=st.integers(1, 6),
    eps=st.floats(0.05, 2.0),
    seed=st.integers(0, 2**16),
    scaling=st.sampled_from([0.5, 0.8, None]),
)
def test_plan_properties(n, m, eps, seed, scaling):
    a, b, cost = _problem(n, m, seed)
    res = sinkhorn(a, b, cost, epsilon=eps, scaling=scaling, tol=1e-10, max_iter=20000)
    assert bool(res.converged)
    assert (res.plan >= 0).all()
    torch.testing.assert_close(res.plan.sum(-2), b, rtol=0, atol=1e-10)  # g updated last: exact
    torch.testing.assert_close(res.plan.sum(-1), a, rtol=0, atol=1e-9)
    # KL >= 0 and the independent coupling a⊗b is feasible: <P,C> <= OT_eps <= <a⊗b, C>.
    assert res.cost <= res.objective + 1e-10
    assert res.objective <= (a[:, None] * b[None, :] * cost).sum() + 1e-10
    # Primal = dual at the optimum.
    linear, kl = _entropic_value(res.plan.numpy(), a, b, cost)
    np.testing.assert_allclose(res.objective.item(), linear + eps * kl, rtol=1e-7, atol=1e-9)


def test_scaling_changes_speed_not_answer():
    a, b, cost = _problem(12, 12, seed=4)
    cost = cost * 10
    scaled = sinkhorn(a, b, cost, epsilon=0.02, scaling=0.5, **TIGHT)
    plain = sinkhorn(a, b, cost, epsilon=0.02, scaling=None, **TIGHT)
    torch.testing.assert_close(scaled.plan, plain.plan, rtol=1e-7, atol=1e-12)
    assert scaled.n_iter < plain.n_iter


def test_check_every_and_tol_control_iterations():
    a, b, cost = _problem(5, 5, seed=5)
    res = sinkhorn(a, b, cost, epsilon=0.1, scaling=None, check_every=7, tol=1e-8)
    assert res.n_iter % 7 == 0
    loose = sinkhorn(a, b, cost, epsilon=0.1, scaling=None, check_every=1, tol=1e-3)
    tight = sinkhorn(a, b, cost, epsilon=0.1, scaling=None, check_every=1, tol=1e-10)
    assert loose.n_iter < tight.n_iter
    err = (loose.plan.sum(-1) - a).abs().sum()
    assert err < 1e-3


# --- gradients -----------------------------------------------------------------------------


def _grads(a, b, cost, eps, gradient):
    a, b, cost = (t.clone().requires_grad_() for t in (a, b, cost))
    res = sinkhorn(a, b, cost, epsilon=eps, gradient=gradient, **TIGHT)
    res.objective.backward()
    return res, a.grad, b.grad, cost.grad


def _centered(t):
    return t - t.mean(-1, keepdim=True)


@pytest.mark.parametrize("seed", [0, 1])
def test_envelope_matches_autodiff(seed):
    a, b, cost = _problem(5, 4, seed)
    env, ga, gb, gc = _grads(a, b, cost, 0.3, "envelope")
    auto, ga2, gb2, gc2 = _grads(a, b, cost, 0.3, "autodiff")
    assert not env.f.requires_grad and auto.f.requires_grad  # envelope iterates without a graph
    torch.testing.assert_close(gc, env.plan.detach(), rtol=1e-8, atol=1e-12)  # d/dC = P
    torch.testing.assert_close(gc, gc2, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(_centered(ga), _centered(ga2), rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(_centered(gb), _centered(gb2), rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(ga, env.f, rtol=1e-8, atol=1e-9)  # d/da = f
    torch.testing.assert_close(gb, env.g, rtol=1e-8, atol=1e-9)  # d/db = g


def test_envelope_matches_finite_differences():
    a, b, cost = _problem(4, 5, seed=11)
    eps, h = 0.2, 1e-5
    gen = torch.Generator().manual_seed(0)
    _, ga, gb, gc = _grads(a, b, cost, eps, "envelope")

    def value(a_, b_, c_):
        return sinkhorn(a_, b_, c_, epsilon=eps, **TIGHT).objective.item()

    dc = torch.randn(cost.shape, generator=gen, dtype=F64)
    da = _centered(torch.randn(a.shape, generator=gen, dtype=F64))  # stays on the simplex
    db = _centered(torch.randn(b.shape, generator=gen, dtype=F64))
    fd_c = (value(a, b, cost + h * dc) - value(a, b, cost - h * dc)) / (2 * h)
    fd_a = (value(a + h * da, b, cost) - value(a - h * da, b, cost)) / (2 * h)
    fd_b = (value(a, b + h * db, cost) - value(a, b - h * db, cost)) / (2 * h)
    np.testing.assert_allclose((gc * dc).sum().item(), fd_c, rtol=1e-6)
    np.testing.assert_allclose((ga * da).sum().item(), fd_a, rtol=1e-6)
    np.testing.assert_allclose((gb * db).sum().item(), fd_b, rtol=1e-6)


def test_autodiff_gives_exact_gradient_of_linear_cost():
    a, b, cost = _problem(4, 3, seed=12)
    eps, h = 0.5, 1e-5
    c = cost.clone().requires_grad_()
    sinkhorn(a, b, c, epsilon=eps, gradient="autodiff", **TIGHT).cost.backward()
    dc = torch.randn(cost.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    fd = (
        sinkhorn(a, b, cost + h * dc, epsilon=eps, **TIGHT).cost - sinkhorn(a, b, cost - h * dc, epsilon=eps, **TIGHT).cost
    ) / (2 * h)
    np.testing.assert_allclose((c.grad * dc).sum().item(), fd.item(), rtol=1e-5)


# --- robustness ----------------------------------------------------------------------------


def test_nonconvergence_warns():
    a, b, cost = _problem(8, 8, seed=3)
    with pytest.warns(SinkhornConvergenceWarning, match="max_iter.*epsilon.*float64.*tol") as rec:
        res = sinkhorn(a, b, cost, epsilon=0.01, max_iter=2, scaling=None)
    assert issubclass(rec[0].category, RuntimeWarning)
    assert rec[0].filename == __file__  # points at the caller, not at the library
    assert not bool(res.converged) and res.n_iter == 2
    assert torch.isfinite(res.plan).all() and torch.isfinite(res.objective)


def test_converged_does_not_warn():
    a, b, cost = _problem(5, 5, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert bool(sinkhorn(a, b, cost, epsilon=0.5).converged)


_A, _B, _C = _problem(3, 4, seed=0)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (dict(a=torch.tensor([0.5, -0.1, 0.6], dtype=F64)), ValueError, "`a`.*nonnegative"),
        (dict(b=torch.full((4,), 0.3, dtype=F64)), ValueError, "`b`.*sum to 1"),
        (dict(a=torch.full((1, 3), 1 / 3, dtype=F64)), ValueError, "`a`"),
        (dict(b=torch.full((5,), 0.2, dtype=F64)), ValueError, "`b`"),
        (dict(a=torch.tensor([1, 0, 0])), TypeError, "`a`.*floating"),
        (dict(cost=torch.ones(3, 4, dtype=torch.int64)), TypeError, "`cost`"),
        (dict(cost=torch.ones(3, dtype=F64)), ValueError, "`cost`"),
        (dict(epsilon=0.0), ValueError, "`epsilon`"),
        (dict(epsilon=-1.0), ValueError, "`epsilon`"),
        (dict(gradient="implicit"), ValueError, "envelope.*autodiff"),
        (dict(scaling=1.5), ValueError, "`scaling`"),
        (dict(max_iter=0), ValueError, "`max_iter`"),
    ],
)
def test_bad_inputs(kwargs, exc, match):
    args = dict(a=_A, b=_B, cost=_C, epsilon=0.1) | kwargs
    with pytest.raises(exc, match=match):
        sinkhorn(args.pop("a"), args.pop("b"), args.pop("cost"), **args)


def test_batch_mismatch_raises():
    a, b, cost = _problem(3, 4, seed=0, batch=(2,))
    with pytest.raises(ValueError, match="`b`"):
        sinkhorn(a, b[:1], cost, epsilon=0.1)


@pytest.mark.parametrize("gradient", ["envelope", "autodiff"])
def test_zero_weights(gradient):
    a, b, cost = _problem(5, 6, seed=9)
    a[1] = 0.0
    a = a / a.sum()
    b[[0, 4]] = 0.0
    b = b / b.sum()
    cost[1, 0] = -10.0  # outside the support: exp((f + g - C)/eps) overflows there
    ar, br, cr = (t.clone().requires_grad_() for t in (a, b, cost))
    res = sinkhorn(ar, br, cr, epsilon=0.01, gradient=gradient, **TIGHT)
    res.objective.backward()
    for t in (res.f, res.g, res.plan, res.objective, ar.grad, br.grad, cr.grad):
        assert torch.isfinite(t).all()
    assert (res.plan[1] == 0).all() and (res.plan[:, [0, 4]] == 0).all()
    # Equals the problem restricted to the support.
    keep_a, keep_b = a > 0, b > 0
    sub = sinkhorn(a[keep_a], b[keep_b], cost[keep_a][:, keep_b], epsilon=0.01, **TIGHT)
    torch.testing.assert_close(res.plan[keep_a][:, keep_b], sub.plan, rtol=1e-7, atol=1e-12)
    torch.testing.assert_close(res.objective, sub.objective, rtol=1e-9, atol=1e-12)
    if gradient == "envelope":
        torch.testing.assert_close(ar.grad, res.f, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize(("dtype", "atol"), [(torch.bfloat16, 1e-3), (torch.float16, 1e-4), (torch.float32, 1e-6)])
def test_low_precision_accumulates_in_float32(dtype, atol):
    gen = torch.Generator().manual_seed(6)
    a = _simplex(16, gen).to(dtype)
    b = torch.full((8,), 1 / 8, dtype=dtype)
    c = (torch.rand(16, 8, generator=gen, dtype=F64) * 2).to(dtype).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rounded weights are renormalized: still converges
        res = sinkhorn(a, b, c, epsilon=0.05)
    res.objective.backward()
    assert res.plan.dtype == res.objective.dtype == res.f.dtype == dtype
    for t in (res.f, res.g, res.plan, res.cost, res.objective, c.grad):
        assert torch.isfinite(t).all()
    # Reference: the same rounded inputs in float64. Computing in `dtype` itself misses this.
    a64 = a.double() / a.double().sum()
    ref = sinkhorn(a64, b.double(), c.detach().double(), epsilon=0.05, **TIGHT)
    torch.testing.assert_close(res.plan.double(), ref.plan, rtol=0, atol=atol)
    np.testing.assert_allclose(res.objective.double().item(), ref.objective.item(), rtol=10 * torch.finfo(dtype).eps)


def test_small_epsilon_float32_no_overflow():
    a, b, cost = _problem(20, 20, seed=8)
    with pytest.warns(SinkhornConvergenceWarning):  # eps / max(C) = 1e-5 is out of fp32's reach
        res = sinkhorn(a.float(), b.float(), (cost * 50).float(), epsilon=1e-3, max_iter=300)
    assert torch.isfinite(res.plan).all() and torch.isfinite(res.objective)


# --- Sinkhorn divergence -------------------------------------------------------------------


def _clouds(n, m, d, seed, shift=1.0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen, dtype=F64), torch.randn(m, d, generator=gen, dtype=F64) + shift


@pytest.mark.parametrize("cost", available_costs())
def test_divergence_self_is_zero_with_zero_gradient(cost):
    x, _ = _clouds(12, 12, 2, seed=0)
    xr, yr = x.clone().requires_grad_(), x.clone().requires_grad_()
    s = sinkhorn_divergence(xr, yr, cost=cost, epsilon=0.1)
    s.backward()
    assert abs(s.item()) < 1e-12
    assert xr.grad.abs().max() < 1e-8 and yr.grad.abs().max() < 1e-8


@pytest.mark.parametrize(("cost", "metric"), [("sqeuclidean", "sqeuclidean"), ("euclidean", "euclidean"), ("l1", "cityblock")])
def test_divergence_matches_pot_composition(cost, metric):
    x, y = _clouds(9, 7, 3, seed=2)
    gen = torch.Generator().manual_seed(2)
    a, b = _simplex(9, gen), _simplex(7, gen)
    eps = 1.0
    s = sinkhorn_divergence(x, y, a=a, b=b, cost=cost, epsilon=eps, **TIGHT)

    def pot_ot(u, v, wu, wv):
        m = torch.from_numpy(ot.dist(u.numpy(), v.numpy(), metric=metric))
        linear, kl = _entropic_value(_pot_plan(wu, wv, m, eps), wu, wv, m)
        return linear + eps * kl

    expected = pot_ot(x, y, a, b) - 0.5 * (pot_ot(x, x, a, a) + pot_ot(y, y, b, b))
    np.testing.assert_allclose(s.item(), expected, rtol=1e-6)


def test_linear_cost_debiasing_matches_pot_empirical_divergence():
    # POT's empirical_sinkhorn_divergence debiases <P, C> (Genevay et al.), not OT_eps:
    # compose our `cost` outputs the same way to check against it.
    x, y = _clouds(10, 8, 2, seed=3)
    eps = 0.5
    a, b = torch.full((10,), 0.1, dtype=F64), torch.full((8,), 0.125, dtype=F64)

    def lin(u, v, wu, wv):
        return sinkhorn(wu, wv, torch.cdist(u, v) ** 2, epsilon=eps, **TIGHT).cost.item()

    ours = lin(x, y, a, b) - 0.5 * (lin(x, x, a, a) + lin(y, y, b, b))
    pot = ot.bregman.empirical_sinkhorn_divergence(x.numpy(), y.numpy(), eps, stopThr=1e-13, numIterMax=100000)
    np.testing.assert_allclose(ours, float(pot), rtol=1e-6)
    assert abs(sinkhorn_divergence(x, y, epsilon=eps, **TIGHT).item() - ours) > 1e-3  # conventions differ


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 8), m=st.integers(1, 8), seed=st.integers(0, 2**16), shift=st.floats(0.0, 2.0))
def test_divergence_nonnegative(n, m, seed, shift):
    x, y = _clouds(n, m, 2, seed, shift)
    assert sinkhorn_divergence(x, y, epsilon=1.0, tol=1e-10, max_iter=5000).item() >= -1e-9


def test_divergence_decreases_as_y_approaches_x():
    x, y = _clouds(10, 10, 2, seed=4, shift=2.0)
    vals = [sinkhorn_divergence(x, x + t * (y - x), epsilon=0.5, tol=1e-9, max_iter=5000).item() for t in (1, 0.6, 0.3, 0.1)]
    assert all(u > v for u, v in zip(vals, vals[1:])), vals
    assert vals[-1] > 0


def test_divergence_gradient_matches_finite_differences():
    x, y = _clouds(6, 5, 2, seed=5)
    xr = x.clone().requires_grad_()
    sinkhorn_divergence(xr, y, epsilon=0.5, **TIGHT).backward()
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=F64)
    h = 1e-5
    fd = (sinkhorn_divergence(x + h * v, y, epsilon=0.5, **TIGHT) - sinkhorn_divergence(x - h * v, y, epsilon=0.5, **TIGHT)) / (2 * h)
    np.testing.assert_allclose((xr.grad * v).sum().item(), fd.item(), rtol=1e-6)


def test_divergence_batched_callable_and_errors():
    x, y = _clouds(6, 5, 2, seed=6)
    xb, yb = torch.stack([x, x + 0.5]), torch.stack([y, y - 0.5])
    batched = sinkhorn_divergence(xb, yb, epsilon=0.5, **TIGHT)
    assert batched.shape == (2,)
    for i in range(2):
        torch.testing.assert_close(batched[i], sinkhorn_divergence(xb[i], yb[i], epsilon=0.5, **TIGHT), rtol=1e-9, atol=1e-12)
    by_callable = sinkhorn_divergence(x, y, cost=lambda u, v: torch.cdist(u, v, p=1), epsilon=0.5, **TIGHT)
    torch.testing.assert_close(by_callable, sinkhorn_divergence(x, y, cost="l1", epsilon=0.5, **TIGHT))
    with pytest.raises(ValueError, match="euclidean.*l1.*sqeuclidean"):
        sinkhorn_divergence(x, y, cost="cosine", epsilon=0.5)
    with pytest.raises(ValueError, match="`y`"):
        sinkhorn_divergence(x, y[:, :1], epsilon=0.5)
    with pytest.raises(ValueError, match="`epsilon`"):
        sinkhorn_divergence(x, y, epsilon=0.0)
    with pytest.raises(TypeError, match="max_iters"):
        sinkhorn_divergence(x, y, epsilon=0.5, max_iters=3)


def test_divergence_low_precision():
    x, y = _clouds(16, 16, 2, seed=7)
    ref = sinkhorn_divergence(x, y, epsilon=0.5)
    xb = x.to(torch.bfloat16).requires_grad_()
    s = sinkhorn_divergence(xb, y.to(torch.bfloat16), epsilon=0.5)
    s.backward()
    assert s.dtype == torch.bfloat16 and torch.isfinite(s) and torch.isfinite(xb.grad).all()
    np.testing.assert_allclose(s.double().item(), ref.item(), rtol=5e-2)
