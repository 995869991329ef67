"""Issue 26 section 4, robust: each bad input gets a correct value or an error naming the argument."""

import math

import pytest
import torch
from torch import nn

from divmin.robust import (class_gaussian_init, class_pca_init, energy, joint_energy, kl_energy_terms,
                           robustness_metrics, sgld_sample, trades_attack, weat_weights)


def _net():
    torch.manual_seed(0)
    return nn.Linear(2, 2).requires_grad_(False)


def test_sgld_sample_refuses_an_integer_start():
    with pytest.raises(TypeError, match="`x0`"):  # was a RuntimeError from the model's matmul
        sgld_sample(_net(), torch.ones(3, 2, dtype=torch.long), torch.tensor([0, 1, 0]))


def test_sgld_sample_refuses_bad_bounds():
    with pytest.raises(ValueError, match="`bounds`"):
        sgld_sample(_net(), torch.ones(3, 2), torch.tensor([0, 1, 0]), bounds=(1.0, 0.0))


X = torch.tensor([[0.1, 0.2], [0.3, 0.2], [0.8, 0.9], [0.9, 0.7]])
Y = torch.tensor([0, 0, 1, 1])


@pytest.mark.parametrize("init", [class_gaussian_init, class_pca_init])
def test_class_inits_refuse_non_finite_or_integer_data(init):
    bad = X.clone()
    bad[0, 0] = math.nan
    with pytest.raises(ValueError, match="`x`"):  # was a LinAlgError from the Cholesky factor
        init(bad, Y, torch.tensor([0]))
    with pytest.raises(TypeError, match="`x`"):
        init(X.long(), Y, torch.tensor([0]))
    with pytest.raises(TypeError, match="`sample_labels`"):
        init(X, Y, torch.tensor([0.0]))


def test_class_gaussian_init_of_a_huge_rank_deficient_class_draws_its_gaussian():
    # two points 1e15 apart: the covariance is rank one at scale 1e30, where a jitter of 1e-8 is no help
    x = torch.tensor([[1e15, 0.0], [0.0, 1e15]], dtype=torch.float64)
    draws = class_gaussian_init(x, torch.tensor([0, 0]), torch.zeros(4000, dtype=torch.long), shrinkage=0.0,
                                bounds=None, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(draws).all()
    centred = draws - x.mean(0)
    cov = centred.T @ centred / draws.shape[0]
    expected = torch.tensor([[0.5, -0.5], [-0.5, 0.5]], dtype=torch.float64) * 1e30  # the sample covariance
    assert torch.allclose(cov / 1e30, expected / 1e30, atol=0.05)


def test_class_gaussian_init_refuses_a_bad_shrinkage():
    with pytest.raises((TypeError, ValueError), match="`shrinkage`"):
        class_gaussian_init(X, Y, torch.tensor([0]), shrinkage="x")


def test_robustness_metrics_refuses_an_empty_batch():
    with pytest.raises(ValueError, match="`x`"):  # was a dict of NaN
        robustness_metrics(_net(), torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), eps=0.1)


def test_robustness_metrics_checks_the_attack_even_when_nothing_is_attacked():
    with pytest.raises(ValueError, match="`eps`"):
        robustness_metrics(_net(), X, Y, eps=-1.0)


def test_energies_refuse_integer_logits():
    for fn, args in ((energy, ()), (joint_energy, (torch.tensor([0]),)), (weat_weights, ())):
        with pytest.raises(TypeError, match="logits"):
            fn(torch.ones(1, 2, dtype=torch.long), *args)


def test_kl_energy_terms_with_a_zero_probability_class_is_the_kl():
    natural = torch.tensor([[-math.inf, 0.0, 1.0]])
    adv = torch.tensor([[0.5, 0.2, -0.3]])
    terms = kl_energy_terms(adv, natural)
    p, q = natural.softmax(-1), adv.softmax(-1)
    kl = (p[:, 1:] * (p[:, 1:] / q[:, 1:]).log()).sum(-1)  # class 0 has p = 0: it adds nothing
    assert torch.isfinite(terms["joint"]).all()
    assert torch.allclose(terms["marginal"] + terms["joint"], kl, atol=1e-6)


def test_kl_energy_terms_refuses_logits_without_a_softmax():
    with pytest.raises(ValueError, match="`natural_logits`"):
        kl_energy_terms(torch.zeros(1, 2), torch.tensor([[math.inf, 0.0]]))


def test_trades_attack_checks_its_input_before_calling_the_model():
    with pytest.raises(TypeError, match="`x`"):
        trades_attack(_net(), [[0.5, 0.5]], eps=0.1)
