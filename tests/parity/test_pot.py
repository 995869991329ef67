"""Parity with POT's entropic-OT tests: ``test/test_bregman.py`` and ``test/batch/test_solve_batch.py``.

Each test names the upstream test it follows and keeps its inputs (numpy ``RandomState(0)`` draws,
``ot.dist`` costs, regularization) and its tolerance; the reference is POT itself, run here.
Deliberate differences, stated where they matter: divmin's ``epsilon`` is POT's ``reg`` with the
``reg_type="kl"`` regularizer ``eps KL(P || a b^T)``; ``SinkhornResult.cost`` is ``<P, C>`` (what
``ot.sinkhorn2`` returns) and ``.objective`` the entropic value; divmin's ``sinkhorn_divergence``
debiases the entropic objective, POT's ``empirical_sinkhorn_divergence`` the linear cost.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

ot = pytest.importorskip("ot")

from divmin import sinkhorn, sinkhorn_divergence  # noqa: E402

F64 = torch.float64


def _t(x):
    return torch.as_tensor(np.asarray(x), dtype=F64)


def test_sinkhorn_plan_and_cost_match_pot():
    """test_bregman.py::test_sinkhorn / test_sinkhorn_variants: n = 100 Gaussian points, reg 1, plan atol 1e-5."""
    rng = np.random.RandomState(0)
    x = rng.randn(100, 2)
    u = ot.utils.unif(100)
    M = ot.dist(x, x)
    plan_pot = ot.sinkhorn(u, u, M, 1, stopThr=1e-10)
    plan_log = ot.bregman.sinkhorn_log(u, u, M, 1, stopThr=1e-10)
    res = sinkhorn(_t(u), _t(u), _t(M), epsilon=1.0, tol=1e-10)
    assert bool(res.converged)
    np.testing.assert_allclose(res.plan.numpy(), plan_pot, atol=1e-5)
    np.testing.assert_allclose(res.plan.numpy(), plan_log, atol=1e-5)
    np.testing.assert_allclose(res.plan.sum(1).numpy(), u, atol=1e-5)  # POT's marginal checks
    np.testing.assert_allclose(res.plan.sum(0).numpy(), u, atol=1e-5)
    np.testing.assert_allclose(float(res.cost), ot.sinkhorn2(u, u, M, 1, stopThr=1e-10), atol=1e-5)


def test_sinkhorn_multi_b_matches_pot():
    """test_bregman.py::test_sinkhorn_multi_b: n = 10, three target histograms, reg 0.1, atol 1e-4.

    POT takes b as (n, 3) columns against one a; divmin batches (3, n) rows with a repeated.
    """
    rng = np.random.RandomState(0)
    x = rng.randn(10, 2)
    u = ot.utils.unif(10)
    b = rng.rand(10, 3)
    b = b / np.sum(b, 0, keepdims=True)
    M = ot.dist(x, x)
    for method in ("sinkhorn", "sinkhorn_log"):
        pot = [ot.sinkhorn2(u, b[:, k], M, 0.1, method=method, stopThr=1e-10) for k in range(3)]
        res = sinkhorn(_t(u).expand(3, 10), _t(b.T), _t(M).expand(3, 10, 10), epsilon=0.1, tol=1e-10, max_iter=20000)
        np.testing.assert_allclose(res.cost.numpy(), pot, atol=1e-4)


def test_sinkhorn_small_reg_approaches_exact_ot_where_pot_returns_zero():
    """test_bregman.py::test_sinkhorn_stabilization: 1-D Gaussians on 100 bins, dist0 cost, reg 1e-5.

    Deliberate difference: upstream only checks that ``sinkhorn_log`` and ``sinkhorn_stabilized`` agree
    (atol 1e-6), and at this reg both return 0.0 here; the entropic cost tends to the exact OT cost as
    reg -> 0, so divmin is held to ``ot.emd2`` instead (within 0.5%: the plan is a near-permutation and
    Sinkhorn stops at ``max_iter`` with a convergence warning).
    """
    n = 100
    a1 = ot.datasets.make_1D_gauss(n, m=30, s=10)
    a2 = ot.datasets.make_1D_gauss(n, m=40, s=10)
    M = ot.utils.dist0(n)
    reg = 1e-5
    pot = [ot.sinkhorn2(a1, a2, M, reg, method="sinkhorn_log"),
           ot.sinkhorn2(a1, a2, M, reg, tau=1, method="sinkhorn_stabilized")]
    np.testing.assert_allclose(pot[0], pot[1], atol=1e-6)  # upstream's own check
    exact = ot.emd2(a1, a2, M)
    with _no_error():
        res = sinkhorn(_t(a1), _t(a2), _t(M), epsilon=reg, max_iter=2000)
    assert float(res.cost) == pytest.approx(exact, rel=5e-3)


class _no_error:  # convergence warnings are informative here (a near-permutation plan), not failures
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc):
        return self._w.__exit__(*exc)


def test_sinkhorn_divergence_matches_pot_debiasing():
    """test_bregman.py::test_empirical_sinkhorn_divergence: 10 points on a line, a = linspace, reg 1, atol 1e-5."""
    n = 10
    a = np.linspace(1, n, n)
    a /= a.sum()
    b = ot.unif(n)
    X_s = np.reshape(np.arange(n, dtype=np.float64), (n, 1))
    X_t = np.reshape(np.arange(0, n * 2, 2, dtype=np.float64), (n, 1))
    M, M_s, M_t = ot.dist(X_s, X_t), ot.dist(X_s, X_s), ot.dist(X_t, X_t)
    # POT debiases the linear cost <P, C>: divmin's SinkhornResult.cost on the same three problems
    linear = (sinkhorn(_t(a), _t(b), _t(M), epsilon=1.0, tol=1e-10, max_iter=20000).cost
              - 0.5 * sinkhorn(_t(a), _t(a), _t(M_s), epsilon=1.0, tol=1e-10, max_iter=20000).cost
              - 0.5 * sinkhorn(_t(b), _t(b), _t(M_t), epsilon=1.0, tol=1e-10, max_iter=20000).cost)
    pot = ot.bregman.empirical_sinkhorn_divergence(X_s, X_t, 1, a=a, b=b)
    np.testing.assert_allclose(float(linear), pot, atol=1e-5)

    # divmin's sinkhorn_divergence debiases the entropic objective: the same from POT's plans
    def objective(p, q, C):
        P = ot.sinkhorn(p, q, C, 1, stopThr=1e-12, numItermax=100000)
        nz = P > 0
        return float((P * C).sum() + (P[nz] * np.log(P[nz] / np.outer(p, q)[nz])).sum())

    pot_entropic = objective(a, b, M) - 0.5 * objective(a, a, M_s) - 0.5 * objective(b, b, M_t)
    ours = sinkhorn_divergence(_t(X_s), _t(X_t), a=_t(a), b=_t(b), epsilon=1.0, tol=1e-10)
    np.testing.assert_allclose(float(ours), pot_entropic, atol=1e-5)


@pytest.mark.skipif(not hasattr(ot, "batch"), reason="this POT has no ot.batch")
def test_batched_sinkhorn_matches_ot_batch():
    """test/batch/test_solve_batch.py::test_solve_batch: 4 problems, n = 16, M = rand, reg 0.1 (reg_type "kl"),
    tol 1e-5; plans atol 1e-5, linear values atol 1e-4, each also against ``ot.solve``."""
    rng = np.random.RandomState(0)
    M = rng.rand(4, 16, 16)
    res_pot = ot.batch.solve_batch(M, reg=0.1, max_iter=10000, tol=1e-5, reg_type="kl", grad="detach")
    u = torch.full((4, 16), 1 / 16, dtype=F64)
    res = sinkhorn(u, u, _t(M), epsilon=0.1, tol=1e-9)
    np.testing.assert_allclose(res.plan.numpy(), np.asarray(res_pot.plan), atol=1e-5)
    np.testing.assert_allclose(res.cost.numpy(), np.asarray(res_pot.value_linear), atol=1e-4)
    for i in range(4):
        single = ot.solve(M[i], reg=0.1, max_iter=10000, tol=1e-5, reg_type="kl")
        np.testing.assert_allclose(res.plan[i].numpy(), np.asarray(single.plan), atol=1e-5)
        np.testing.assert_allclose(float(res.cost[i]), float(single.value_linear), atol=1e-4)
