"""Oracles: the energy identities, the paper's weights by hand, PGD's constraints and ascent, bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from divmin import categorical_divergence
from divmin.robust import (AttackSettings, available_objectives, energy, joint_energy, pgd_attack, robust_loss,
                           trades_attack, weat_weights)


def _net(seed: int = 0, d: int = 6, c: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, c))
    return net.requires_grad_(False)


def test_log_softmax_is_energy_difference():
    logits = torch.randn(5, 7, dtype=torch.float64) * 4
    y = torch.arange(5) % 7
    expected = F.log_softmax(logits, -1).gather(1, y[:, None]).squeeze(1)
    torch.testing.assert_close(energy(logits) - joint_energy(logits, y), expected)


def test_trades_kl_through_energies_equals_kl():
    # KL(p(x) || p(x')) = sum_y p(y|x) [(-E(x,y) + E(x)) - (-E(x',y) + E(x'))]
    g = torch.Generator().manual_seed(1)
    nat, adv = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(6, 5, generator=g, dtype=torch.float64)
    classes = torch.arange(5)
    log_p = torch.stack([-joint_energy(nat, classes.expand(6, 5)[:, k]) + energy(nat) for k in range(5)], 1)
    log_q = torch.stack([-joint_energy(adv, classes.expand(6, 5)[:, k]) + energy(adv) for k in range(5)], 1)
    via_energy = (log_p.exp() * (log_p - log_q)).sum(1)
    kl = categorical_divergence(adv, nat, divergence="forward_kl", reduction="none")
    torch.testing.assert_close(via_energy, kl.double())
    # and the torch oracle, in its own argument order
    torch.testing.assert_close(kl.double(), F.kl_div(F.log_softmax(adv, -1), F.log_softmax(nat, -1), log_target=True,
                                                     reduction="none").sum(1))


def test_weights_equal_paper_formula_by_hand():
    logits = torch.tensor([[0.0, 0.0], [5.0, -1.0], [-30.0, -40.0]], requires_grad=True)
    e = [-math.log(2.0), -(5 + math.log(1 + math.exp(-6))), -(-30 + math.log(1 + math.exp(-10)))]
    by_hand = torch.tensor([1 / math.log(1 + math.exp(abs(v))) for v in e])
    w = weat_weights(logits)
    torch.testing.assert_close(w, by_hand)
    assert not w.requires_grad
    torch.testing.assert_close(weat_weights(logits, normalize=True), by_hand / by_hand.mean())


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_stays_in_ball_and_range_and_raises_loss(norm):
    net = _net()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 6, generator=g)
    y = net(x).argmax(1)  # correctly classified: the clean loss is low
    eps = 0.1 if norm == "linf" else 0.3
    x_adv = pgd_attack(net, x, y, eps=eps, steps=10, norm=norm, generator=g)
    dist = (x_adv - x).abs().amax(1) if norm == "linf" else (x_adv - x).norm(dim=1)
    assert float(dist.max()) <= eps + 1e-5
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    clean = F.cross_entropy(net(x), y, reduction="none")
    attacked = F.cross_entropy(net(x_adv), y, reduction="none")
    assert float(attacked.mean()) > float(clean.mean()) + 0.05
    assert float((attacked >= clean - 1e-6).float().mean()) > 0.9
    # a random point of the ball raises the loss far less than the attack
    noise = (x + (torch.rand(x.shape, generator=g) * 2 - 1) * eps * (1 if norm == "linf" else 0.4)).clamp(0, 1)
    assert float(attacked.mean()) > float(F.cross_entropy(net(noise), y)) + 0.03


def test_pgd_generator_makes_it_reproducible_and_custom_loss_is_maximised():
    net, x = _net(), torch.rand(8, 6)
    y = net(x).argmax(1)
    a = pgd_attack(net, x, y, eps=0.05, steps=2, step_size=0.01, generator=torch.Generator().manual_seed(3))
    b = pgd_attack(net, x, y, eps=0.05, steps=2, step_size=0.01, generator=torch.Generator().manual_seed(3))
    c = pgd_attack(net, x, y, eps=0.05, steps=2, step_size=0.01, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # maximising the energy E(x') moves every input up the energy surface
    up = pgd_attack(net, x, None, eps=0.05, steps=5, loss=lambda logits, _: energy(logits), start="none")
    assert bool((energy(net(up)) > energy(net(x))).all())


def test_trades_attack_raises_kl_and_any_divergence():
    net, x = _net(1), torch.rand(32, 6)
    for div in ("forward_kl", "js"):
        x_adv = trades_attack(net, x, eps=0.1, steps=5, divergence=div, generator=torch.Generator().manual_seed(0))
        assert float((x_adv - x).abs().max()) <= 0.1 + 1e-6
        after = categorical_divergence(net(x_adv), net(x), divergence=div)
        small = categorical_divergence(net((x + 1e-3 * torch.randn(x.shape)).clamp(0, 1)), net(x), divergence=div)
        assert float(after) > 10 * float(small)


@pytest.mark.parametrize("kw, name", [(dict(eps=-0.1), "eps"), (dict(eps=0.1, steps=0), "steps"),
                                      (dict(eps=0.1, norm="l1"), "norm"), (dict(eps=0.1, step_size=-1.0), "step_size"),
                                      (dict(eps=0.1, bounds=(1.0, 0.0)), "bounds")])
def test_bad_attack_arguments_name_themselves(kw, name):
    net = _net()
    with pytest.raises(ValueError, match=f"`{name}`"):
        pgd_attack(net, torch.rand(2, 6), torch.tensor([0, 1]), **kw)


def test_labels_out_of_range_are_refused():
    net, x = _net(), torch.rand(2, 6)
    with pytest.raises(ValueError, match="`target`"):
        pgd_attack(net, x, torch.tensor([0, 4]), eps=0.1)
    with pytest.raises(ValueError, match="`labels`"):
        robust_loss(net, x, torch.tensor([-1, 0]), objective="standard")
    with pytest.raises(ValueError, match="`labels`"):
        joint_energy(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(TypeError, match="`labels`"):
        joint_energy(torch.zeros(2, 3), torch.tensor([0.0, 1.0]))


def test_objectives_registry_and_their_values():
    assert available_objectives() == ["pgd-at", "standard", "trades", "weat"]
    net, x = _net(2), torch.rand(16, 6)
    y = torch.arange(16) % 4
    s = AttackSettings(eps=0.1, steps=3, beta=2.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(robust_loss(net, x, y, objective="standard")["loss"], F.cross_entropy(net(x), y))
    t = robust_loss(net, x, y, objective="trades", settings=s)
    torch.testing.assert_close(t["loss"], t["ce"] + 2.0 * t["reg"])
    assert float(t["reg"]) > 0 and float(t["energy_adv"]) != float(t["energy_natural"])
    s0 = AttackSettings(eps=0.1, steps=3, beta=2.0, generator=torch.Generator().manual_seed(0))
    w = weat_weights(net(x))
    wt = robust_loss(net, x, y, objective="weat", settings=s0)
    # same attack (same seed): WEAT's loss is the weighted version of TRADES' terms, with the paper's raw weights
    x_adv = trades_attack(net, x, eps=0.1, steps=3, generator=torch.Generator().manual_seed(0))
    ce = F.cross_entropy(net(x), y, reduction="none")
    reg = categorical_divergence(net(x_adv), net(x), reduction="none")
    torch.testing.assert_close(wt["loss"], (w * ce).mean() + 2.0 * (w * reg).mean())
    assert not torch.allclose(wt["loss"], ce.mean() + 2.0 * reg.mean())
    s1 = AttackSettings(eps=0.1, steps=3, beta=2.0, generator=torch.Generator().manual_seed(0), weat_normalize=True)
    wn = robust_loss(net, x, y, objective="weat", settings=s1)  # weights of batch mean one: the loss rescaled
    torch.testing.assert_close(wn["loss"], wt["loss"] / w.mean())


def test_kl_energy_terms_sum_to_the_kl_and_match_energies():
    from divmin.robust import kl_energy_terms

    g = torch.Generator().manual_seed(5)
    nat, adv = torch.randn(7, 4, generator=g, dtype=torch.float64) * 3, torch.randn(7, 4, generator=g, dtype=torch.float64)
    t = kl_energy_terms(adv, nat)
    torch.testing.assert_close(t["marginal"] + t["joint"], categorical_divergence(adv, nat, reduction="none").double())
    torch.testing.assert_close(t["marginal"], energy(nat) - energy(adv))
    p = nat.softmax(-1)
    by_class = torch.stack([joint_energy(adv, torch.full((7,), k)) - joint_energy(nat, torch.full((7,), k))
                            for k in range(4)], 1)
    torch.testing.assert_close(t["joint"], (p * by_class).sum(1))
    with pytest.raises(ValueError, match="`adv_logits`"):
        kl_energy_terms(torch.zeros(2, 3), torch.zeros(2, 4))


def test_attacks_run_in_eval_mode_and_restore_the_mode():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).train()
    x, y = torch.rand(16, 6), torch.arange(16) % 3
    s = AttackSettings(eps=0.1, steps=4, generator=torch.Generator().manual_seed(0))
    robust_loss(net, x, y, objective="trades", settings=s)
    assert net.training
    # only the two training forwards (natural and adversarial) update the batch-norm statistics:
    # the label probe and the 4 attack steps ran in eval mode
    assert int(net[1].num_batches_tracked) == 2
    robust_loss(net, x, y, objective="pgd-at", settings=s)
    assert int(net[1].num_batches_tracked) == 3 and net.training
