"""The score-function surrogate: its gradient against exact enumeration for every registry member."""

from __future__ import annotations

import math

import pytest
import torch

import divmin
from divmin.estimators import MovingBaseline, ScoreFunctionOutput, score_function_surrogate
from tests.divergences.conftest import members

K = 12  # points of the enumerated categorical space


def _space(seed: int = 0):
    """Target log P (every point has mass), model logits theta (the parameter), log Q = log_softmax(theta)."""
    g = torch.Generator().manual_seed(seed)
    log_p = torch.log_softmax(1.5 * torch.randn(K, generator=g, dtype=torch.float64), 0)
    theta = (0.8 * torch.randn(K, generator=g, dtype=torch.float64)).requires_grad_()
    return log_p, theta


def _grad(loss: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    (grad,) = torch.autograd.grad(loss, [theta])
    return grad


def _enumerated(log_p, theta, div, **kw) -> ScoreFunctionOutput:
    """The surrogate on every point once, i.e. samples of a uniform proposal q = 1/K: w = K Q."""
    logq = torch.log_softmax(theta, 0)
    return score_function_surrogate(logq, log_p - logq.detach(), divergence=div,
                                    log_weights=logq.detach() + math.log(K), **kw)


@members
def test_enumerated_gradient_is_the_exact_gradient_of_d_f(div):
    log_p, theta = _space()
    logq = torch.log_softmax(theta, 0)
    # oracle: autograd of D_f(P || Q) = sum_x Q f(P/Q), straight from the member's f
    want = _grad((logq.exp() * div.f(log_p - logq)).sum(), theta)
    got = _grad(_enumerated(log_p, theta, div).loss, theta)
    scale = want.abs().max().clamp_min(1e-8)
    assert torch.allclose(got / scale, want / scale, atol=1e-9), float(((got - want) / scale).abs().max())


@pytest.mark.parametrize("name", ["js", "reverse_kl", "pearson_chi2"])
def test_a_constant_baseline_shifts_the_loss_but_not_the_exact_gradient(name):
    log_p, theta = _space(1)
    plain, shifted = _enumerated(log_p, theta, name), _enumerated(log_p, theta, name, baseline=2.5)
    torch.testing.assert_close(_grad(shifted.loss, theta), _grad(plain.loss, theta))  # E_Q[grad log Q] = 0
    logq = torch.log_softmax(theta, 0).detach()
    torch.testing.assert_close(shifted.loss - plain.loss, -2.5 * (plain.weights * logq).mean())
    torch.testing.assert_close(shifted.pseudo_rewards, plain.pseudo_rewards)  # reported before the baseline


@pytest.mark.parametrize("name", ["forward_kl", "js", "reverse_kl"])
def test_importance_weighted_samples_of_a_proposal_converge_to_the_exact_gradient(name):
    div, n, b = divmin.divergence(name), 400_000, 0.3
    log_p, theta = _space(2)
    g = torch.Generator().manual_seed(0)
    log_prop = torch.log_softmax(torch.randn(K, generator=g, dtype=torch.float64), 0)  # q != Q, q != uniform
    x = torch.multinomial(log_prop.exp(), n, replacement=True, generator=g)
    logq = torch.log_softmax(theta, 0)
    out = score_function_surrogate(logq[x], (log_p - logq.detach())[x], divergence=div,
                                   log_weights=(logq.detach() - log_prop)[x], baseline=b)
    got = _grad(out.loss, theta)
    logq = torch.log_softmax(theta, 0)  # a fresh graph for the oracle
    want = _grad((logq.exp() * div.f(log_p - logq)).sum(), theta)
    # the estimate is a mean of n iid vectors v(x) = w (g - b) (e_x - Q) (the gradient of log Q(x) in theta):
    # its exact standard error, by enumeration over x, sets the tolerance
    with torch.no_grad():
        q_all = logq.exp()
        coef = (logq - log_prop).exp() * (div.g(log_p - logq) - b)
        v = coef[:, None] * (torch.eye(K, dtype=torch.float64) - q_all)  # (K points, K coordinates)
        sd = ((log_prop.exp()[:, None] * v ** 2).sum(0) - want ** 2).sqrt() / math.sqrt(n)
    assert ((got - want).abs() < 5 * sd).all(), ((got - want) / sd)
    assert sd.max() < 0.05 * want.abs().max()  # and the test is sharp enough to see a wrong weighting


def test_on_policy_means_unit_weights_and_outputs_are_detached():
    log_p, theta = _space(3)
    logq = torch.log_softmax(theta, 0)
    a = score_function_surrogate(logq, log_p - logq.detach(), divergence="js")
    b = score_function_surrogate(logq, log_p - logq.detach(), divergence="js", log_weights=torch.zeros(K))
    assert torch.equal(a.weights, torch.ones(K, dtype=torch.float64)) and torch.equal(a.loss, b.loss)
    assert a.loss.requires_grad and not any(t.requires_grad for t in a[1:])


def test_reverse_kl_on_policy_is_reinforce_with_reward_log_r():
    log_p, theta = _space(4)
    g = torch.Generator().manual_seed(1)
    logq = torch.log_softmax(theta, 0)
    x = torch.multinomial(logq.detach().exp(), 256, replacement=True, generator=g)
    reward = (log_p - logq.detach())[x]
    got = _grad(score_function_surrogate(logq[x], reward, divergence="reverse_kl", baseline=1.0).loss, theta)
    logq = torch.log_softmax(theta, 0)
    want = _grad(-(reward * logq[x]).mean(), theta)  # REINFORCE; g = 1 - log r: the 1 is a baseline
    torch.testing.assert_close(got, want)


def test_zero_weight_samples_contribute_nothing_even_where_g_is_infinite():
    logq = torch.log(torch.tensor([0.5, 0.5])).requires_grad_()
    log_r = torch.tensor([0.0, -math.inf])  # P has no mass on the second point: reverse KL's g = inf there
    out = score_function_surrogate(logq, log_r, divergence="reverse_kl", log_weights=torch.tensor([0.0, -math.inf]))
    (grad,) = torch.autograd.grad(out.loss, [logq])
    assert torch.isfinite(out.loss) and torch.equal(grad, torch.tensor([0.5, 0.0]))  # (1/2) w g, g(1) = 1
    with pytest.raises(ValueError, match=r"reverse_kl: g\(r\) is not finite on 1 sample"):
        score_function_surrogate(logq, log_r, divergence="reverse_kl")


def test_low_precision_model_logps_get_fp32_weights():
    logq = torch.log(torch.tensor([0.25, 0.75])).to(torch.bfloat16).requires_grad_()
    log_r = torch.tensor([60.0, -60.0], dtype=torch.bfloat16)
    out = score_function_surrogate(logq, log_r, divergence="js")
    assert out.pseudo_rewards.dtype == torch.float32 and torch.isfinite(out.pseudo_rewards).all()
    # the surrogate is accumulated in fp32 (large weights overflow half precision); the gradient reaches bf16
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    out.loss.backward()
    assert logq.grad.dtype == torch.bfloat16 and torch.isfinite(logq.grad).all()


@pytest.mark.parametrize("kwargs, err, word", [
    (dict(model_logps=torch.zeros(2, 2)), ValueError, "model_logps"),
    (dict(model_logps=torch.tensor([0.0, math.nan, 0.0])), ValueError, "model_logps"),
    (dict(log_ratio=torch.zeros(4)), ValueError, "log_ratio"),
    (dict(log_ratio=[0.0, 0.0, 0.0]), TypeError, "log_ratio"),
    (dict(log_weights=torch.zeros(2)), ValueError, "log_weights"),
    (dict(baseline="x"), TypeError, "baseline"),
    (dict(baseline=torch.zeros(2)), ValueError, "baseline"),
    (dict(divergence="nope"), ValueError, "valid names"),
])
def test_bad_arguments_name_the_argument(kwargs, err, word):
    args = dict(model_logps=torch.zeros(3, requires_grad=True), log_ratio=torch.zeros(3), divergence="js")
    args.update(kwargs)
    with pytest.raises(err, match=word):
        score_function_surrogate(args.pop("model_logps"), args.pop("log_ratio"), **args)


def test_moving_baseline_is_the_ema_of_the_weighted_mean_of_g():
    logq = torch.log(torch.tensor([0.5, 0.25, 0.25])).requires_grad_()
    log_r = torch.log(torch.tensor([0.5, 2.0, 2.0]))
    out = score_function_surrogate(logq, log_r, divergence="forward_kl",
                                   log_weights=torch.log(torch.tensor([2.0, 1.0, 0.5])))
    # oracle by hand: forward KL's g = -r, weights (2, 1, 0.5): (2 (-0.5) + 1 (-2) + 0.5 (-2)) / 3.5
    first = -4.0 / 3.5
    b = MovingBaseline(decay=0.25)
    assert b() is None and b.update(out) == pytest.approx(first)
    second = b.update(out._replace(pseudo_rewards=torch.zeros(3)))
    assert second == pytest.approx(0.25 * first) and b() == second
    with pytest.raises(ValueError, match="decay"):
        MovingBaseline(1.0)
