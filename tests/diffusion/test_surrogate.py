"""`fdistill_surrogate` against an independent oracle: quadrature of D_f between 1-D Gaussians.

Teacher p_0 = N(mu_p, s_p^2), generator x_0 = mu_q + s_q z, so under x_t = x_0 + sigma eps
both noised densities are Gaussians with variance s^2 + sigma^2: their scores and
log r are exact, and D_f(p_t || q_t) = int q_t f(p_t / q_t) is a 1-D integral that a
fine trapezoid rule computes (autograd through it gives the oracle gradient).
The variances are chosen so chi^2-type members and alpha up to 1.6 are finite
with finite Monte-Carlo variance.
"""

from __future__ import annotations

import math

import pytest
import torch

import divmin
from divmin.diffusion import check_fdistill_divergence, fdistill_surrogate
from tests.divergences.conftest import MEMBER_IDS, MEMBERS

MU_P, S_P, MU_Q, S_Q, SIGMA = 0.6, 1.0, -0.2, 0.9, 0.6
N_MC = 400_000


def _gauss_logpdf(x, mu, var):
    return -0.5 * ((x - mu) ** 2 / var + torch.log(2 * math.pi * var))


def _quadrature_grad(div) -> torch.Tensor:
    """grad_(mu_q, log s_q) of int q_t f(p_t/q_t) dx on a fine grid."""
    theta = torch.tensor([MU_Q, math.log(S_Q)], dtype=torch.float64, requires_grad=True)
    x = torch.linspace(-16.0, 16.0, 64_001, dtype=torch.float64)
    var_p = torch.tensor(S_P**2 + SIGMA**2, dtype=torch.float64)
    var_q = theta[1].exp() ** 2 + SIGMA**2
    logp, logq = _gauss_logpdf(x, MU_P, var_p), _gauss_logpdf(x, theta[0], var_q)
    integrand = logq.exp() * div.f(logp - logq)
    value = torch.trapezoid(integrand, x)
    (grad,) = torch.autograd.grad(value, theta)
    return grad


def _monte_carlo_grad(div) -> tuple[torch.Tensor, torch.Tensor]:
    """Autograd of the unnormalised surrogate w.r.t. (mu_q, log s_q), and its standard error."""
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(N_MC, 1, generator=gen, dtype=torch.float64)
    eps = torch.randn(N_MC, 1, generator=gen, dtype=torch.float64)
    theta = torch.tensor([MU_Q, math.log(S_Q)], dtype=torch.float64, requires_grad=True)
    x_t = theta[0] + theta[1].exp() * z + SIGMA * eps
    var_p, var_q = S_P**2 + SIGMA**2, S_Q**2 + SIGMA**2
    xd = x_t.detach()
    s_p, s_q = -(xd - MU_P) / var_p, -(xd - MU_Q) / var_q
    log_r = (_gauss_logpdf(xd, MU_P, torch.tensor(var_p)) - _gauss_logpdf(xd, MU_Q, torch.tensor(var_q)))[:, 0]
    loss = fdistill_surrogate(x_t, s_q, s_p, log_r, divergence=div, normalize=False)
    (grad,) = torch.autograd.grad(loss, theta)
    per_sample = div.h(log_r)[:, None] * (s_q - s_p) * torch.cat([torch.ones_like(z), S_Q * z], 1)
    return grad, per_sample.std(0) / math.sqrt(N_MC)


@pytest.mark.parametrize("div", MEMBERS, ids=MEMBER_IDS)
def test_unnormalised_gradient_matches_quadrature_of_the_divergence(div):
    try:
        check_fdistill_divergence(div)
    except ValueError:
        # Refused members must really have no score-matching weight.
        assert bool((div.h(torch.linspace(-8, 8, 101, dtype=torch.float64)) == 0).all())
        return
    exact = _quadrature_grad(div)
    mc, se = _monte_carlo_grad(div)
    assert exact.abs().max() > 10 * se.max(), "the test must be able to tell a wrong gradient"
    assert torch.all((mc - exact).abs() <= 5 * se + 1e-9), (mc, exact, se)


def test_normalised_gradient_divides_by_the_batch_mean_of_h():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, 3, generator=gen, requires_grad=True)
    s_p, s_q, log_r = torch.randn(64, 3, generator=gen), torch.randn(64, 3, generator=gen), torch.randn(64, generator=gen)
    div = divmin.divergence("forward_kl")
    (g_raw,) = torch.autograd.grad(fdistill_surrogate(x, s_q, s_p, log_r, divergence=div, normalize=False), x)
    (g_norm,) = torch.autograd.grad(fdistill_surrogate(x, s_q, s_p, log_r, divergence=div), x)
    torch.testing.assert_close(g_norm, g_raw / log_r.exp().mean())
    # per-sample direction h(r_b) (s_q - s_p)_b / B, written out by hand
    torch.testing.assert_close(g_raw, log_r.exp()[:, None] * (s_q - s_p) / 64)


def test_reverse_kl_is_dmd_whatever_the_log_ratio():
    """h = 1: the gradient is (s_fake - s_teacher)/B, the DMD / VSD update, normalised or not."""
    x = torch.randn(8, 2, requires_grad=True)
    s_p, s_q = torch.randn(8, 2), torch.randn(8, 2)
    for norm in (True, False):
        (g,) = torch.autograd.grad(
            fdistill_surrogate(x, s_q, s_p, 30 * torch.randn(8), divergence="reverse_kl", normalize=norm), x)
        torch.testing.assert_close(g, (s_q - s_p) / 8)


def test_time_weight_scales_each_sample():
    x = torch.randn(4, 2, requires_grad=True)
    s_p, s_q, w = torch.randn(4, 2), torch.randn(4, 2), torch.tensor([0.0, 1.0, 2.0, 4.0])
    (g,) = torch.autograd.grad(fdistill_surrogate(x, s_q, s_p, torch.zeros(4), divergence="reverse_kl",
                                                  time_weight=w), x)
    torch.testing.assert_close(g, w[:, None] * (s_q - s_p) / 4)


def test_bf16_inputs_accumulate_in_fp32():
    x = torch.randn(16, 5, dtype=torch.bfloat16, requires_grad=True)
    s_p, s_q = torch.randn(16, 5, dtype=torch.bfloat16), torch.randn(16, 5, dtype=torch.bfloat16)
    log_r = torch.full((16,), 60.0, dtype=torch.bfloat16)  # h = r = e^60: normalised in fp32
    loss = fdistill_surrogate(x, s_q, s_p, log_r, divergence="forward_kl")
    (g,) = torch.autograd.grad(loss, x)
    assert loss.dtype == torch.bfloat16 and torch.isfinite(g).all()
    torch.testing.assert_close(g.float(), (s_q - s_p).float() / 16, atol=1e-2, rtol=1e-2)


def test_bad_inputs_are_refused_by_name():
    x, s, lr = torch.randn(4, 2), torch.randn(4, 2), torch.zeros(4)
    with pytest.raises(ValueError, match="total_variation"):
        fdistill_surrogate(x, s, s, lr, divergence="total_variation")
    with pytest.raises(ValueError, match="teacher_score"):
        fdistill_surrogate(x, s, s[:, :1], lr, divergence="js")
    with pytest.raises(ValueError, match="fake_score"):
        fdistill_surrogate(x, s[:3], s, lr, divergence="js")
    with pytest.raises(ValueError, match="log_ratio"):
        fdistill_surrogate(x, s, s, lr[:, None], divergence="js")
    with pytest.raises(ValueError, match="log_ratio"):
        fdistill_surrogate(x, s, s, torch.full((4,), float("nan")), divergence="js")
    with pytest.raises(ValueError, match="time_weight"):
        fdistill_surrogate(x, s, s, lr, divergence="js", time_weight=torch.ones(3))
    with pytest.raises(ValueError, match="unknown divergence"):
        fdistill_surrogate(x, s, s, lr, divergence="nope")
