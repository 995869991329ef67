"""EDMDenoiser at extreme noise levels: the DSM loss stays finite and equals its weighted form where both exist."""

import pytest
import torch

from divmin.diffusion import EDMDenoiser, MLPBackbone


def _weighted(d: EDMDenoiser, x0, s, eps):
    """lambda(sigma) |D(x0 + sigma eps) - x0|^2, lambda = (sigma^2 + sd^2) / (sigma sd)^2 (EDM), in float64 terms."""
    sd = d.sigma_data
    w = (s.double() ** 2 + sd**2) / (s.double() * sd) ** 2
    err = (d(x0 + s[:, None] * eps, s).double() - x0.double()).square().sum(1)
    return float((w * err).mean())


def test_dsm_loss_is_the_weighted_denoising_error():
    torch.manual_seed(0)
    d = EDMDenoiser(MLPBackbone(2), sigma_data=0.5)
    x0, eps = torch.randn(6, 2), torch.randn(6, 2)
    s = torch.tensor([0.05, 0.3, 1.0, 2.0, 5.0, 80.0])
    assert float(d.dsm_loss(x0, s, eps)) == pytest.approx(_weighted(d, x0, s, eps), rel=1e-4)


@pytest.mark.parametrize("sigma", [1e-30, 1e-12, 1e12, 1e30])
def test_dsm_loss_and_denoiser_are_finite_at_extreme_sigma(sigma):
    torch.manual_seed(1)
    d = EDMDenoiser(MLPBackbone(2), sigma_data=0.1)
    x0, eps, s = torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([sigma])
    loss = d.dsm_loss(x0, s, eps)
    assert torch.isfinite(loss)
    # with x0 = eps = 0 the backbone's target is 0: the loss is |F|^2 at the backbone's own input
    out, _ = d.backbone(torch.zeros(1, 2), s.log() / 4)
    assert float(loss) == pytest.approx(float(out.square().sum()), rel=1e-5)
    assert torch.isfinite(d(torch.ones(1, 2), s)).all()
