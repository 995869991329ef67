"""sinkd_loss: the research code's computation re-implemented independently, finite differences, POT."""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch

from divmin.distill import sinkd_loss

F64 = torch.float64


def _logits(b, c, seed):
    return 2.0 * torch.randn(b, c, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _softmax_np(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _research_code_numpy(s, t, eps, iters, temp):
    """The SinKD recipe step by step in numpy float64, with explicit loops for the cost."""
    p, q = _softmax_np(s / temp), _softmax_np(t / temp)
    n = p.shape[0]
    w = np.array([[np.abs(p[i] - q[j]).sum() for j in range(n)] for i in range(n)])
    k = np.exp(-w / eps)
    for _ in range(iters):
        for i in range(n):
            k[i] /= k[i].sum()
        for j in range(n):
            k[:, j] /= k[:, j].sum()
    return float((k * w).sum())


@pytest.mark.parametrize("eps,iters,temp", [(0.1, 20, 2.0), (0.5, 3, 1.0), (0.05, 7, 3.0)])
def test_reference_mode_matches_an_independent_reimplementation(eps, iters, temp):
    s, t = _logits(6, 5, 1), _logits(6, 5, 2)
    got = sinkd_loss(s, t, epsilon=eps, n_iters=iters, temperature=temp)
    ref = _research_code_numpy(s.numpy(), t.numpy(), eps, iters, temp)
    np.testing.assert_allclose(float(got), ref, rtol=1e-12)
    assert got.dtype == F64 and sinkd_loss(s.float(), t.float()).dtype == torch.float32


def test_reference_mode_gradient_matches_finite_differences_and_teacher_gets_none():
    s, t = _logits(4, 3, 3).requires_grad_(), _logits(4, 3, 4).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: sinkd_loss(x, t, epsilon=0.3, n_iters=5), (s,), eps=1e-6, atol=1e-7)
    sinkd_loss(s, t).backward()
    assert t.grad is None and torch.isfinite(s.grad).all()


def test_reference_mode_converges_to_b_times_pots_plain_sinkhorn_cost():
    s, t = _logits(5, 4, 5), _logits(5, 4, 6)
    p, q = torch.softmax(s / 2, -1).numpy(), torch.softmax(t / 2, -1).numpy()
    m = ot.dist(p, q, metric="cityblock")
    a = np.full(5, 1 / 5)
    pot = ot.sinkhorn2(a, a, m, reg=0.1, numItermax=10_000, stopThr=1e-14)
    np.testing.assert_allclose(float(sinkd_loss(s, t, n_iters=2000)) / 5, pot, rtol=1e-8)


def _pot_objective(p, q, eps, iters=100_000):
    m = ot.dist(p, q, metric="cityblock")
    a, b = np.full(len(p), 1 / len(p)), np.full(len(q), 1 / len(q))
    plan = ot.bregman.sinkhorn_log(a, b, m, reg=eps, numItermax=iters, stopThr=1e-12)
    ab = np.outer(a, b)
    return float((plan * m).sum() + eps * (plan * np.log(plan / ab)).sum())


@pytest.mark.parametrize("eps", [0.1, 0.02])
def test_log_mode_matches_pot_entropic_objective(eps):
    s, t = _logits(7, 5, 7), _logits(7, 5, 8)
    got = sinkd_loss(s, t, epsilon=eps, mode="log", tol=1e-10, max_iter=20_000)
    p, q = torch.softmax(s / 2, -1).numpy(), torch.softmax(t / 2, -1).numpy()
    np.testing.assert_allclose(float(got), _pot_objective(p, q, eps), rtol=1e-7)


def test_log_mode_debiased_matches_pot_and_vanishes_at_the_teacher():
    s, t = _logits(6, 4, 9), _logits(6, 4, 10)
    p, q = torch.softmax(s / 2, -1).numpy(), torch.softmax(t / 2, -1).numpy()
    ref = _pot_objective(p, q, 0.5) - 0.5 * (_pot_objective(p, p, 0.5, 5000) + _pot_objective(q, q, 0.5, 5000))
    got = sinkd_loss(s, t, epsilon=0.5, mode="log", debias=True, tol=1e-10, max_iter=5000)
    np.testing.assert_allclose(float(got), ref, rtol=1e-6, atol=1e-10)
    assert abs(float(sinkd_loss(t, t, mode="log", debias=True))) < 1e-10
    assert float(sinkd_loss(t, t, epsilon=0.5, mode="log")) > 0  # the biased value is not 0 at the teacher


def test_log_mode_envelope_gradient_matches_finite_differences():
    s, t = _logits(4, 3, 11).requires_grad_(), _logits(4, 3, 12)
    kw = dict(epsilon=0.2, mode="log", tol=1e-13, max_iter=50_000)
    sinkd_loss(s, t, **kw).backward()
    h, fd = 1e-5, torch.zeros_like(s)
    for idx in np.ndindex(*s.shape):
        e = torch.zeros_like(s)
        e[idx] = h
        fd[idx] = (sinkd_loss(s.detach() + e, t, **kw) - sinkd_loss(s.detach() - e, t, **kw)) / (2 * h)
    torch.testing.assert_close(s.grad, fd, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("bad,err", [(dict(epsilon=0.0), "epsilon"), (dict(n_iters=0), "n_iters"),
                                     (dict(mode="plain"), "mode"), (dict(temperature=0), "temperature"),
                                     (dict(debias=True), "debias")])
def test_bad_arguments(bad, err):
    with pytest.raises(ValueError, match=err):
        sinkd_loss(_logits(3, 4, 0), _logits(3, 4, 1), **bad)
    with pytest.raises(ValueError, match="classes"):
        sinkd_loss(_logits(3, 4, 0), _logits(3, 5, 1))
