"""The exact Gaussian-mixture teacher: score = autograd of its log-density, exact noised samples."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import multivariate_normal

from divmin.diffusion import DiffusionTeacher, GaussianMixtureTeacher, score_from_denoiser


def _teacher(dim: int = 3, k: int = 4, diag: bool = False) -> GaussianMixtureTeacher:
    gen = torch.Generator().manual_seed(dim * 10 + k)
    means = 3 * torch.randn(k, dim, generator=gen)
    stds = 0.3 + torch.rand(k, dim if diag else 1, generator=gen).squeeze(-1)
    return GaussianMixtureTeacher(means, stds, torch.rand(k, generator=gen) + 0.1)


@pytest.mark.parametrize("dim,diag", [(1, False), (2, False), (5, True)])
def test_score_is_the_gradient_of_the_log_density(dim, diag):
    teacher = _teacher(dim, diag=diag).double()
    x = (4 * torch.randn(32, dim, dtype=torch.float64)).requires_grad_(True)
    sigma = torch.rand(32, dtype=torch.float64) * 3 + 0.01
    (grad,) = torch.autograd.grad(teacher.log_prob(x, sigma).sum(), x)
    torch.testing.assert_close(teacher.score(x.detach(), sigma), grad)
    assert isinstance(teacher, DiffusionTeacher)


def test_log_density_matches_scipy_mixture():
    teacher = _teacher(2, diag=True).double()
    x = torch.randn(10, 2, dtype=torch.float64) * 3
    sigma = 0.7
    dens = sum(
        w.item() * multivariate_normal(m.numpy(), s.numpy() ** 2 + sigma**2).pdf(x.numpy())  # 1-D cov = diagonal
        for w, m, s in zip(teacher.weights, teacher.means, teacher.stds))
    torch.testing.assert_close(teacher.log_prob(x, sigma), torch.as_tensor(dens).log())


def test_denoiser_is_the_posterior_mean_tweedie():
    """E[x_0 | x_t] by self-normalised importance weights over many exact clean samples."""
    teacher = _teacher(1).double()
    gen = torch.Generator().manual_seed(3)
    x0 = teacher.sample(400_000, generator=gen).double()
    x_t, sigma = torch.tensor([[-1.0], [0.5], [2.0]], dtype=torch.float64), 1.3
    logw = -0.5 * ((x_t[:, None, 0] - x0[None, :, 0]) / sigma) ** 2  # likelihood of x_t given each x_0
    post = (torch.softmax(logw, -1) * x0[None, :, 0]).sum(-1)
    torch.testing.assert_close(teacher.denoise(x_t, sigma)[:, 0], post, atol=1e-2, rtol=0)
    torch.testing.assert_close(score_from_denoiser(teacher.denoise(x_t, sigma), x_t, sigma), teacher.score(x_t, sigma))


def test_noised_samples_match_mixture_moments():
    teacher = _teacher(3)
    sigma = 0.8
    x = teacher.sample(200_000, sigma, generator=torch.Generator().manual_seed(0)).double()
    w, m = teacher.weights.double(), teacher.means.double()
    var = teacher.stds.double().square()[:, :1] + sigma**2  # isotropic here
    mean = (w[:, None] * m).sum(0)
    second = (w[:, None, None] * (m[:, :, None] * m[:, None, :] + var[:, :, None] * torch.eye(3))).sum(0)
    cov = second - mean[:, None] * mean[None]
    torch.testing.assert_close(x.mean(0), mean, atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), cov, atol=0.1, rtol=0.01)


def test_component_weights_of_samples():
    teacher = GaussianMixtureTeacher(torch.tensor([[-50.0], [0.0], [50.0]]), 1.0, torch.tensor([1.0, 2.0, 5.0]))
    x = teacher.sample(80_000, generator=torch.Generator().manual_seed(1))
    share = torch.stack([(x < -25).float().mean(), ((x > -25) & (x < 25)).float().mean(), (x > 25).float().mean()])
    torch.testing.assert_close(share, torch.tensor([1 / 8, 2 / 8, 5 / 8]), atol=0.01, rtol=0)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="means"):
        GaussianMixtureTeacher(torch.zeros(3), 1.0)
    with pytest.raises(ValueError, match="stds"):
        GaussianMixtureTeacher(torch.zeros(3, 2), torch.tensor([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="weights"):
        GaussianMixtureTeacher(torch.zeros(3, 2), 1.0, torch.ones(2))
    t = GaussianMixtureTeacher(torch.zeros(3, 2), 1.0)
    with pytest.raises(ValueError, match="x_t"):
        t.score(torch.zeros(4, 3), 1.0)
    with pytest.raises(ValueError, match="sigma"):
        t.score(torch.zeros(4, 2), torch.ones(3))
    with pytest.raises(ValueError, match="sigma"):
        t.score(torch.zeros(4, 2), -1.0)
    assert math.isfinite(float(t.log_prob(torch.zeros(1, 2), 0.0)))
