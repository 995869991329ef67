"""Energy analysis: KL terms in the training metrics and the evaluation, PCA starts, AutoAttack (optional)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from divmin.divergences import categorical_divergence
from divmin.robust import (SGLD_INITS, AttackSettings, autoattack_accuracy, autoattack_available, class_pca_init,
                           energy, pgd_attack, robust_loss, robustness_metrics, trades_attack)


def _net(seed: int = 0, d: int = 16) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 32), nn.ReLU(), nn.Linear(32, 4)).requires_grad_(False)


def test_training_metrics_split_the_kl_at_the_training_adversary():
    net, x, y = _net(), torch.rand(12, 16), torch.arange(12) % 4
    out = robust_loss(net, x, y, objective="trades",
                      settings=AttackSettings(eps=0.2, steps=3, beta=1.0, generator=torch.Generator().manual_seed(3)))
    # TRADES' regulariser is exactly that KL: its two energy terms add up to it
    torch.testing.assert_close(out["kl_marginal"] + out["kl_joint"], out["reg"], rtol=1e-5, atol=1e-6)
    assert "kl_marginal" not in robust_loss(net, x, y, objective="standard")


def test_robustness_metrics_reports_the_kl_terms_of_trades_adversary():
    net, x, y = _net(1), torch.rand(20, 16), torch.arange(20) % 4
    m = robustness_metrics(net, x, y, eps=0.2, steps=4, batch_size=7, kl_terms=True,
                           generator=torch.Generator().manual_seed(0))
    assert m["kl"] == pytest.approx(m["kl_marginal"] + m["kl_joint"])
    # oracle: the same attacks by hand, batch by batch, the same random stream
    g, kls, margs = torch.Generator().manual_seed(0), [], []
    for i in range(0, 20, 7):
        xb, yb = x[i:i + 7], y[i:i + 7]
        pgd_attack(net, xb, yb, eps=0.2, steps=4, generator=g)  # drawn first, as in the metrics
        x_adv = trades_attack(net, xb, eps=0.2, steps=4, generator=g)
        kls.append(categorical_divergence(net(x_adv), net(xb), reduction="none"))
        margs.append(energy(net(xb)) - energy(net(x_adv)))
    assert m["kl"] == pytest.approx(float(torch.cat(kls).mean()), rel=1e-5)
    assert m["kl_marginal"] == pytest.approx(float(torch.cat(margs).mean()), rel=1e-4, abs=1e-6)
    assert m["kl"] > 0 and "kl" not in robustness_metrics(net, x, y, eps=0.2, steps=1)
    with pytest.raises(TypeError, match="`kl_terms`"):
        robustness_metrics(net, x, y, eps=0.2, kl_terms=1)


def test_pca_init_keeps_the_leading_directions_of_each_class():
    g = torch.Generator().manual_seed(0)
    n = 3000
    y = torch.arange(n) % 2
    # class c: large variance along one axis (std 0.2), tiny (0.01) along the others
    axes = torch.eye(4)[[0, 2]]
    means = torch.tensor([[0.3, 0.5, 0.5, 0.5], [0.6, 0.4, 0.5, 0.6]])
    x = means[y] + 0.2 * torch.randn(n, 1, generator=g) * axes[y] + 0.01 * torch.randn(n, 4, generator=g)
    draw_y = torch.arange(4000) % 2
    draws = class_pca_init(x, y, draw_y, components=1, bounds=None, generator=g)
    for c in (0, 1):
        d = draws[draw_y == c]
        torch.testing.assert_close(d.mean(0), means[c], atol=0.015, rtol=0)
        # the leading direction is kept with its variance; the others are dropped (zero spread)
        assert float(d[:, 2 * c].std()) == pytest.approx(0.2, rel=0.08)
        others = [k for k in range(4) if k != 2 * c]
        assert float(d[:, others].std(0).max()) < 0.01
    full = class_pca_init(x, y, draw_y, components=4, bounds=None, generator=g)
    assert float(full[draw_y == 0][:, 1].std()) == pytest.approx(0.01, rel=0.15)
    assert set(SGLD_INITS) == {"gaussian", "pca"}
    with pytest.raises(ValueError, match="`components`"):
        class_pca_init(x, y, draw_y, components=0)
    with pytest.raises(ValueError, match="class 2"):
        class_pca_init(x, y, torch.tensor([2]))


def test_autoattack_refuses_bad_arguments_before_importing(monkeypatch):
    import divmin.robust._autoattack as aa

    net, x, y = _net(), torch.rand(4, 16), torch.arange(4)
    monkeypatch.setattr(aa, "autoattack_available", lambda: False)
    with pytest.raises(ImportError, match="torchattacks"):
        autoattack_accuracy(net, x, y, eps=0.1)
    monkeypatch.undo()
    # how flat inputs are shown to torchattacks as (C, H, W) images
    assert aa._image_shape((16,), None) == (1, 4, 4) and aa._image_shape((3, 5, 5), None) == (3, 5, 5)
    with pytest.raises(ValueError, match="`image_shape`"):
        aa._image_shape((16,), (1, 3, 3))
    with pytest.raises(ValueError, match="image_shape"):
        aa._image_shape((15,), None)
    with pytest.raises(ValueError, match="`norm`"):
        autoattack_accuracy(net, x, y, eps=0.1, norm="l1")
    with pytest.raises(ValueError, match="`eps`"):
        autoattack_accuracy(net, x, y, eps=-0.1)
    with pytest.raises(ValueError, match="`x`"):
        autoattack_accuracy(net, x + 1, y, eps=0.1)
    with pytest.raises(ValueError, match="`version`"):
        autoattack_accuracy(net, x, y, eps=0.1, version="fast")


@pytest.mark.skipif(not autoattack_available(), reason="the optional torchattacks package is not installed")
def test_autoattack_is_no_weaker_than_pgd_and_leaves_the_caller_alone():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    g = torch.Generator().manual_seed(0)
    y = torch.arange(48) % 4
    centres = torch.rand(4, 16, generator=g)
    x = (centres[y] + 0.1 * torch.randn(48, 16, generator=g)).clamp(0, 1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(100):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    net.train()
    clean = float((net(x).argmax(1) == y).float().mean())
    rng = torch.get_rng_state()
    aa = autoattack_accuracy(net, x, y, eps=0.15)  # one batch: Square's 5000 queries run once
    assert torch.equal(torch.get_rng_state(), rng) and net.training  # caller's RNG and mode untouched
    pgd = robustness_metrics(net, x, y, eps=0.15, steps=20, generator=torch.Generator().manual_seed(0))["pgd_acc"]
    assert clean == 1.0 and 0 < aa <= pgd + 1e-9 and aa < clean
