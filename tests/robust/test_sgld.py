"""SGLD on E(x, y) lowers the energy on average; the class-wise Gaussian start fits each class."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from divmin.robust import class_gaussian_init, joint_energy, sgld_sample


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3)).requires_grad_(False)


def test_sgld_lowers_the_joint_energy_on_average():
    net, g = _net(), torch.Generator().manual_seed(0)
    x0, y = torch.rand(128, 5, generator=g), torch.arange(128) % 3
    x = sgld_sample(net, x0, y, step_size=0.05, noise=0.005, steps=30, generator=g)
    before, after = joint_energy(net(x0), y), joint_energy(net(x), y)
    assert float(after.mean()) < float(before.mean()) - 0.1
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    # pure noise (no gradient step) does not lower it: the descent comes from the gradient
    x_noise = sgld_sample(net, x0, y, step_size=0.0, noise=0.005, steps=30, generator=g)
    assert abs(float(joint_energy(net(x_noise), y).mean() - before.mean())) < 0.05


def test_class_gaussian_init_matches_each_class():
    g = torch.Generator().manual_seed(0)
    means = torch.tensor([[0.2, 0.3], [0.7, 0.6]])
    y = torch.arange(2000) % 2
    x = means[y] + 0.05 * torch.randn(2000, 2, generator=g)
    draw_y = torch.arange(4000) % 2
    draws = class_gaussian_init(x, y, draw_y, shrinkage=0.0, generator=g)
    for c in (0, 1):
        torch.testing.assert_close(draws[draw_y == c].mean(0), means[c], atol=0.01, rtol=0)
        torch.testing.assert_close(draws[draw_y == c].std(0), torch.full((2,), 0.05), atol=0.005, rtol=0)


@pytest.mark.parametrize("kw, name", [(dict(steps=0), "steps"), (dict(noise=-1.0), "noise"),
                                      (dict(step_size=float("nan")), "step_size")])
def test_bad_sgld_arguments_name_themselves(kw, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        sgld_sample(_net(), torch.rand(2, 5), torch.tensor([0, 1]), **kw)
    with pytest.raises(ValueError, match="`labels`"):
        sgld_sample(_net(), torch.rand(2, 5), torch.tensor([0, 3]))
