"""Tabular f-DPO: the closed-form optimum against independent oracles, and training reaches it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import minimize
from scipy.special import rel_entr
from scipy.stats import entropy as scipy_entropy

import divmin
from divmin.eval import calibration_error
from divmin.align import fdpo_admissible
from divmin.align import (
    bandit_metrics,
    fdpo_optimum,
    optimum_sample_size,
    pair_fisher,
    pair_weights,
    population_fdpo_loss,
)

F64 = torch.float64

ADMISSIBLE = [divmin.divergence(n) for n in divmin.available_divergences("f") if fdpo_admissible(n)[0]]
ADMISSIBLE += [divmin.divergence("alpha", alpha=a) for a in (0.3, 0.7)]
IDS = [str(d) for d in ADMISSIBLE]


def _problem(seed: int, k: int = 8, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ref = torch.softmax(torch.randn(k, generator=g, dtype=F64), 0)
    reward = scale * torch.randn(k, generator=g, dtype=F64)
    return ref, reward


def test_the_admissible_list_is_not_trivial():
    names = {d.name for d in ADMISSIBLE}
    assert {"reverse_kl", "forward_kl", "js", "alpha", "squared_hellinger", "jeffreys"} <= names
    assert "total_variation" not in names and "neyman_chi2" not in names


@pytest.mark.parametrize("beta", [0.05, 0.3, 2.0])
def test_reverse_kl_optimum_is_the_gibbs_tilt(beta):
    ref, reward = _problem(0, k=64)
    tilt = ref * torch.exp((reward - reward.max()) / beta)
    torch.testing.assert_close(fdpo_optimum(ref, reward, divergence="reverse_kl", beta=beta), tilt / tilt.sum(),
                               rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("div", ADMISSIBLE, ids=IDS)
def test_optimum_satisfies_kkt_computed_from_f_alone(div):
    """d/dpi_y [E_pi R - beta sum pi f(ref/pi)] is the same for every y (autograd through f, not g)."""
    ref, reward = _problem(1, k=16)
    beta = 1.0  # keeps every pi_y >= 1e-4: autograd through f loses digits where pi_ref / pi is huge
    pi = fdpo_optimum(ref, reward, divergence=div, beta=beta)
    assert pi.dtype == F64 and abs(float(pi.sum()) - 1) < 1e-12 and bool((pi > 0).all())
    p = pi.clone().requires_grad_(True)
    objective = (p * reward).sum() - beta * (p * div.f(ref.log() - p.log())).sum()
    (grad,) = torch.autograd.grad(objective, p)
    assert float(grad.max() - grad.min()) < 1e-9 * (1 + float(grad.abs().max()))
    implied = reward - beta * div.g(ref.log() - pi.log())  # the same condition through g
    assert float(implied.max() - implied.min()) < 1e-9
    # and it is not a trivial point: the policy moved towards high reward
    assert float((pi * reward).sum()) > float((ref * reward).sum()) + 0.1


def test_forward_kl_optimum_matches_scipy_on_the_simplex():
    """forward KL: sum pi f(ref/pi) = KL(ref || pi); maximise E_pi R - beta KL(ref || pi) with SLSQP."""
    ref, reward = _problem(2, k=8)
    beta = 0.3
    r, q = reward.numpy(), ref.numpy()

    def neg(p):
        return -(p @ r) + beta * float(np.sum(q * np.log(q / p)))

    def grad(p):
        return -r - beta * q / p

    res = minimize(neg, q.copy(), jac=grad, method="SLSQP", bounds=[(1e-12, 1.0)] * len(q),
                   constraints=[{"type": "eq", "fun": lambda p: p.sum() - 1, "jac": lambda p: np.ones_like(p)}],
                   options={"ftol": 1e-15, "maxiter": 1000})
    assert res.success, res.message
    ours = fdpo_optimum(ref, reward, divergence="forward_kl", beta=beta).numpy()
    np.testing.assert_allclose(ours, res.x, atol=2e-6)
    assert neg(ours) <= neg(res.x) + 1e-10


def test_forward_kl_optimum_has_the_closed_form_beta_ref_over_lambda_minus_r():
    ref, reward = _problem(3, k=12)
    pi = fdpo_optimum(ref, reward, divergence="forward_kl", beta=0.7)
    lam = reward + 0.7 * ref / pi  # pi = beta ref / (lambda - R) for one constant lambda
    assert float(lam.max() - lam.min()) < 1e-9
    assert bool((lam > reward.max()).all())


@pytest.mark.parametrize("name", ["total_variation", "neyman_chi2", "softened_reverse_kl"])
def test_inadmissible_divergences_are_refused(name):
    ref, reward = _problem(0)
    with pytest.raises(ValueError, match="cannot be used with f-DPO"):
        fdpo_optimum(ref, reward, divergence=name, beta=0.5)
    with pytest.raises(ValueError):
        population_fdpo_loss(ref.log(), ref.log(), reward, divergence=name, beta=0.5)


def test_population_loss_is_the_bradley_terry_expectation_of_dpo():
    """Reverse KL: an explicit double loop over pairs with the textbook DPO loss."""
    ref, reward = _problem(4, k=6)
    logits = torch.randn(6, generator=torch.Generator().manual_seed(9), dtype=F64)
    logp, logref, beta = F.log_softmax(logits, 0), ref.log(), 0.3
    num = den = 0.0
    for i in range(6):
        for j in range(6):
            if i == j:
                continue
            w = float(ref[i] * ref[j])
            p_ij = 1 / (1 + math.exp(-float(reward[i] - reward[j])))
            margin = beta * float((logp[i] - logref[i]) - (logp[j] - logref[j]))
            loss_ij = math.log1p(math.exp(-margin))  # -log sigmoid(margin)
            num += w * (p_ij * loss_ij + (1 - p_ij) * math.log1p(math.exp(margin)))
            den += w
    got = population_fdpo_loss(logits, logref, reward, divergence="reverse_kl", beta=beta)
    assert abs(float(got) - num / den) < 1e-12


def test_metrics_match_scipy_and_hand_values():
    ref, reward = _problem(5, k=10)
    pi = torch.softmax(torch.randn(10, generator=torch.Generator().manual_seed(1), dtype=F64), 0)
    m = bandit_metrics(pi, ref, reward, divergence="js", beta=0.5)
    assert abs(m["reward"] - float(pi @ reward)) < 1e-12
    assert abs(m["entropy"] - scipy_entropy(pi.numpy())) < 1e-12
    assert abs(m["kl"] - rel_entr(pi.numpy(), ref.numpy()).sum()) < 1e-12
    opt = fdpo_optimum(ref, reward, divergence="js", beta=0.5)
    assert abs(m["tv_to_optimum"] - 0.5 * float((pi - opt).abs().sum())) < 1e-12
    assert m["ece"] > 0.01  # a random policy is miscalibrated
    w = pair_weights(ref)
    assert abs(float(w.sum()) - 1) < 1e-12 and float(w.diagonal().abs().sum()) == 0.0


def test_binned_ece_on_a_hand_example():
    pred = torch.tensor([0.05, 0.15, 0.95, 0.92])
    true = torch.tensor([0.10, 0.15, 0.80, 0.90])
    weight = torch.tensor([1.0, 1.0, 1.0, 1.0])
    # bins: {0.05} |0.05-0.10|, {0.15} 0, {0.95, 0.92} |0.935-0.85|; weights 1/4, 1/4, 1/2
    expected = 0.25 * 0.05 + 0.5 * 0.085
    assert abs(float(calibration_error(pred, true, weight=weight)) - expected) < 1e-7


@pytest.mark.parametrize("div", ADMISSIBLE, ids=IDS)
def test_optimum_is_perfectly_calibrated_and_the_reference_is_not(div):
    ref, reward = _problem(6, k=16, scale=2.0)
    opt = fdpo_optimum(ref, reward, divergence=div, beta=0.5)
    assert bandit_metrics(opt, ref, reward, divergence=div, beta=0.5, optimum=opt)["ece"] < 1e-8
    # the same policy read with half the beta: implied margins shrink, preferences are underconfident
    assert bandit_metrics(opt, ref, reward, divergence=div, beta=0.25)["ece"] > 0.05


@pytest.mark.parametrize("div", ADMISSIBLE, ids=IDS)
def test_training_on_the_population_loss_reaches_the_closed_form_optimum(div):
    ref, reward = _problem(7, k=8)
    beta = 0.5
    logits = ref.log().clone().requires_grad_(True)  # start at the reference policy, as DPO does
    opt = torch.optim.LBFGS([logits], lr=1, max_iter=300, tolerance_grad=1e-12, tolerance_change=1e-15,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = population_fdpo_loss(logits, ref.log(), reward, divergence=div, beta=beta)
        loss.backward()
        return loss

    start = float(closure().detach())
    opt.step(closure)
    pi = torch.softmax(logits.detach(), 0)
    target = fdpo_optimum(ref, reward, divergence=div, beta=beta)
    assert 0.5 * float((ref - target).abs().sum()) > 0.1  # the optimum is far from the start
    assert 0.5 * float((pi - target).abs().sum()) < 1e-5
    # and the optimum is the loss minimiser: no better value than the loss at pi*
    at_opt = float(population_fdpo_loss(target.log(), ref.log(), reward, divergence=div, beta=beta))
    assert float(closure().detach()) <= at_opt + 1e-10 < start


@pytest.mark.parametrize("div", ADMISSIBLE, ids=IDS)
def test_pair_fisher_is_the_population_hessian_at_the_optimum(div):
    """Oracle: autograd's Hessian of the exact population loss; at the optimum the model's preferences are the
    true ones, so the Gauss-Newton matrix over all ordered pairs weighted as the data are equals it."""
    ref, reward = _problem(3, k=6)
    opt = fdpo_optimum(ref, reward, divergence=div, beta=0.4)
    hess = torch.autograd.functional.hessian(
        lambda t: population_fdpo_loss(t, ref.log(), reward, divergence=div, beta=0.4), opt.log())
    i, j = torch.nonzero(~torch.eye(6, dtype=torch.bool), as_tuple=True)
    fisher = pair_fisher(opt.log(), ref.log(), i, j, divergence=div, beta=0.4, weights=pair_weights(ref)[i, j])
    torch.testing.assert_close(fisher, hess, atol=1e-12, rtol=1e-9)


def test_pair_fisher_of_a_batch_is_the_mean_of_outer_products_of_margin_gradients():
    """Oracle: per pair, autograd's gradient a of the f-DPO margin; F = mean sigmoid(m) sigmoid(-m) a a^T.
    Also: a leading batch of policies gives one matrix per policy, and the constant shift is in the null space."""
    ref, _ = _problem(5, k=5)
    logits = torch.randn(2, 5, dtype=F64, generator=torch.Generator().manual_seed(1))
    chosen, rejected = torch.tensor([0, 1, 4, 2, 0]), torch.tensor([3, 2, 0, 4, 1])
    div = divmin.divergence("alpha", alpha=0.3)
    fisher = pair_fisher(F.log_softmax(logits, -1), ref.log(), chosen, rejected, divergence=div, beta=0.7)
    for row in range(2):
        expect = torch.zeros(5, 5, dtype=F64)
        for c, r in zip(chosen.tolist(), rejected.tolist()):
            t = logits[row].clone().requires_grad_(True)
            logp = F.log_softmax(t, 0)
            m = 0.7 * (div.g(ref.log()[c] - logp[c]) - div.g(ref.log()[r] - logp[r]))
            (a,) = torch.autograd.grad(m, t)
            expect += torch.sigmoid(m) * torch.sigmoid(-m) * torch.outer(a, a) / 5
        torch.testing.assert_close(fisher[row], expect.detach(), atol=1e-12, rtol=1e-9)
        assert float((fisher[row] @ torch.ones(5, dtype=F64)).abs().max()) < 1e-12


def test_pair_fisher_rejects_bad_shapes():
    ref, _ = _problem(0, k=4)
    with pytest.raises(ValueError, match="ref_logp"):
        pair_fisher(ref.log(), ref.log()[:3], torch.tensor([0]), torch.tensor([1]), divergence="js", beta=0.1)
    with pytest.raises(ValueError, match="chosen"):
        pair_fisher(ref.log(), ref.log(), torch.tensor([0, 1]), torch.tensor([1]), divergence="js", beta=0.1)


def test_optimum_sample_size_matches_the_cramer_rao_formula_and_scales_as_one_over_tv_squared():
    """Oracle: autograd's population Hessian H, C = A H^+ A, E TV = sqrt(2/pi)/2 sum sqrt(C_yy) / sqrt(N)."""
    ref, reward = _problem(7, k=6)
    opt = fdpo_optimum(ref, reward, divergence="forward_kl", beta=0.5)
    hess = torch.autograd.functional.hessian(
        lambda t: population_fdpo_loss(t, ref.log(), reward, divergence="forward_kl", beta=0.5), opt.log())
    a = torch.diag(opt) - torch.outer(opt, opt)
    c = a @ torch.linalg.pinv(hess, hermitian=True) @ a
    spread = 0.5 * math.sqrt(2 / math.pi) * float(c.diagonal().sqrt().sum())
    n = optimum_sample_size(ref, reward, divergence="forward_kl", beta=0.5, tv=0.05)
    assert n == pytest.approx((spread / 0.05) ** 2, rel=1e-6)
    assert optimum_sample_size(ref, reward, divergence="forward_kl", beta=0.5, tv=0.1) == pytest.approx(n / 4)
    with pytest.raises(ValueError, match="tv"):
        optimum_sample_size(ref, reward, divergence="forward_kl", beta=0.5, tv=0.0)
