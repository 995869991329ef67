"""The logistic critic's optimum is log p / q; the estimator's clamps, per-level EMA and state behave as documented."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from divmin.engine import load_tree, save_tree
from divmin.estimators import LogRatioEstimator, logistic_discriminator_loss


def _bce_oracle(fake: torch.Tensor, real: torch.Tensor, eps: float) -> torch.Tensor:
    """Binary cross-entropy, class by class: labels eps on model samples, 1 - eps on target samples."""
    return (F.binary_cross_entropy_with_logits(real, torch.full_like(real, 1 - eps))
            + F.binary_cross_entropy_with_logits(fake, torch.full_like(fake, eps)))


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_loss_is_binary_cross_entropy_per_class(eps):
    g = torch.Generator().manual_seed(0)
    fake, real = 3 * torch.randn(7, generator=g), 3 * torch.randn(5, generator=g)  # unequal batch sizes
    got = logistic_discriminator_loss(fake, real, label_smoothing=eps)
    torch.testing.assert_close(got, _bce_oracle(fake, real, eps))


def test_unsmoothed_loss_is_the_softplus_gan_loss_exactly():
    g = torch.Generator().manual_seed(1)
    fake, real = torch.randn(9, generator=g), torch.randn(9, generator=g)
    assert torch.equal(logistic_discriminator_loss(fake, real), F.softplus(-real).mean() + F.softplus(fake).mean())


def _smoothed_optimum(log_r: torch.Tensor, eps: float) -> torch.Tensor:
    r = log_r.exp()
    return torch.log(((1 - eps) * r + eps) / (eps * r + 1 - eps))


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_optimal_free_logits_on_a_discrete_space_are_the_closed_form(eps):
    # P and Q on 4 points as sample multiplicities, a free logit per point: the sample loss is the
    # population loss sum_x p softplus(-c) + q softplus(c) (smoothed), minimised in closed form
    p_counts, q_counts = torch.tensor([40, 25, 20, 15]), torch.tensor([10, 20, 30, 40])
    real_x, fake_x = torch.arange(4).repeat_interleave(p_counts), torch.arange(4).repeat_interleave(q_counts)
    c = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([c], lr=1.0, max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = logistic_discriminator_loss(c[fake_x], c[real_x], label_smoothing=eps)
        loss.backward()
        return loss

    opt.step(closure)
    log_r = torch.log((p_counts / 100.0) / (q_counts / 100.0)).double()
    torch.testing.assert_close(c.detach(), _smoothed_optimum(log_r, eps), atol=1e-6, rtol=0)


def test_logistic_critic_on_two_gaussians_recovers_the_closed_form_log_ratio():
    mu_p, s_p, mu_q, s_q, n = 1.0, 0.8, -0.5, 1.2, 40_000
    g = torch.Generator().manual_seed(2)
    real = mu_p + s_p * torch.randn(n, generator=g, dtype=torch.float64)
    fake = mu_q + s_q * torch.randn(n, generator=g, dtype=torch.float64)
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)  # c(x) = w0 + w1 x + w2 x^2: the true family

    def critic(x: torch.Tensor) -> torch.Tensor:
        return w[0] + w[1] * x + w[2] * x ** 2

    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = logistic_discriminator_loss(critic(fake), critic(real))
        loss.backward()
        return loss

    opt.step(closure)
    x = torch.linspace(-1.5, 2.5, 17, dtype=torch.float64)  # where both densities have samples; |log r| <= 4.1
    exact = (-(x - mu_p) ** 2 / (2 * s_p ** 2) + (x - mu_q) ** 2 / (2 * s_q ** 2) + math.log(s_q / s_p))
    err = (critic(x).detach() - exact).abs()
    assert err.max() < 0.15, (err.max(), exact)  # sampling error of 40k samples per class: <= 0.075 on 6 seeds


def test_loss_rejects_bad_arguments():
    with pytest.raises(TypeError, match="model_logits"):
        logistic_discriminator_loss([0.0], torch.zeros(1))
    with pytest.raises(ValueError, match="target_logits"):
        logistic_discriminator_loss(torch.zeros(1), torch.zeros(0))
    with pytest.raises(ValueError, match="label_smoothing"):
        logistic_discriminator_loss(torch.zeros(1), torch.zeros(1), label_smoothing=0.5)


def test_clamps_bind_in_order_logit_then_ratio():
    logits = torch.tensor([-50.0, -1.0, 0.5, 50.0], requires_grad=True)
    raw = LogRatioEstimator(logit_clamp=3.0, ratio_clamp=None, ratio_ema=0.0)
    out = raw(logits)
    assert torch.equal(out, torch.tensor([-3.0, -1.0, 0.5, 3.0]))
    (grad,) = torch.autograd.grad(out.sum(), [logits])
    assert torch.equal(grad, torch.tensor([0.0, 1.0, 1.0, 0.0]))  # differentiable where no clamp binds
    both = LogRatioEstimator(logit_clamp=3.0, ratio_clamp=(0.5, 2.0), ratio_ema=0.0)
    torch.testing.assert_close(both(logits.detach()), torch.tensor([-math.log(2), -math.log(2), 0.5, math.log(2)]))


def test_levels_map_to_equal_bins_with_the_ends_in_the_end_bins():
    est = LogRatioEstimator(num_bins=4)
    level = torch.tensor([0.0, 0.249, 0.25, 0.5, 0.999, 1.0, -0.2, 1.3])
    assert est.bin_ids(level).tolist() == [0, 0, 1, 2, 3, 3, 0, 3]


def test_per_bin_ema_of_r_by_hand():
    est = LogRatioEstimator(num_bins=3, ratio_ema=0.5, logit_clamp=3.0, ratio_clamp=(0.25, 4.0))
    logits = torch.tensor([math.log(2.0), math.log(4.0), 10.0, 10.0])  # the last two clamp to 3
    bins = torch.tensor([0, 0, 2, 2])
    out = est(logits, bins=bins)
    mean = torch.tensor([0.5 + 0.5 * 3.0, 1.0, 0.5 + 0.5 * math.exp(3.0)])  # bin 1 unseen: still 1
    torch.testing.assert_close(est.ratio_mean, mean)
    want = torch.tensor([math.log(2 / 2.0), math.log(4 / 2.0), 3.0 - math.log(mean[2]), 3.0 - math.log(mean[2])])
    torch.testing.assert_close(out, want)
    # a second batch folds in with the same decay; level and bins are two spellings of the same bins
    out2 = est(torch.tensor([0.0]), level=torch.tensor([0.1]))
    torch.testing.assert_close(est.ratio_mean[0], 0.5 * mean[0] + 0.5 * 1.0)
    torch.testing.assert_close(out2, -est.ratio_mean[:1].log())


def test_update_false_reads_without_moving_and_ema_zero_is_off():
    est = LogRatioEstimator(ratio_ema=0.9, ratio_clamp=None)
    est.load_state_dict({"ratio_mean": torch.tensor([2.0])})
    out = est(torch.tensor([1.0]), update=False)
    assert torch.equal(est.ratio_mean, torch.tensor([2.0])) and torch.allclose(out, torch.tensor([1.0 - math.log(2)]))
    off = LogRatioEstimator(ratio_ema=0.0, ratio_clamp=None, num_bins=5)  # no level needed: nothing is binned
    assert torch.equal(off(torch.tensor([1.0, -2.0])), torch.tensor([1.0, -2.0]))
    assert torch.equal(off.ratio_mean, torch.ones(5))


def test_normalisation_removes_a_constant_bias_of_the_critic_per_level():
    # Q = N(0, 1), P = N(0.5, 1): log r(x) = 0.5 x - 0.125 and E_Q[r] = 1. A critic off by a
    # different constant at each of two levels is corrected, level by level, by the running E_Q[r].
    est = LogRatioEstimator(num_bins=2, ratio_ema=0.9, ratio_clamp=None, logit_clamp=20.0)
    g, bias = torch.Generator().manual_seed(3), torch.tensor([0.7, -0.4])
    for _ in range(200):
        x = torch.randn(1024, generator=g)
        bins = torch.randint(2, (1024,), generator=g)
        out = est(0.5 * x - 0.125 + bias[bins], bins=bins)
    torch.testing.assert_close(est.ratio_mean.log(), bias, atol=0.03, rtol=0)
    torch.testing.assert_close(out, 0.5 * x - 0.125, atol=0.03, rtol=0)


def test_state_dict_round_trips_through_the_engine_checkpoint_format(tmp_path):
    est = LogRatioEstimator(num_bins=3, ratio_ema=0.7)
    g = torch.Generator().manual_seed(4)
    est(torch.randn(32, generator=g), level=torch.rand(32, generator=g))
    save_tree(est.state_dict(), tmp_path / "task")
    restored = LogRatioEstimator(num_bins=3, ratio_ema=0.7)
    restored.load_state_dict(load_tree(tmp_path / "task"))
    assert torch.equal(restored.ratio_mean, est.ratio_mean)
    logits, level = torch.randn(16, generator=g), torch.rand(16, generator=g)
    assert torch.equal(restored(logits, level=level), est(logits, level=level))
    assert torch.equal(restored.ratio_mean, est.ratio_mean)
    with pytest.raises(ValueError, match="ratio_mean"):
        LogRatioEstimator(num_bins=2).load_state_dict(est.state_dict())


@pytest.mark.parametrize("kwargs, word", [
    (dict(logit_clamp=0.0), "logit_clamp"), (dict(ratio_clamp=(1.0, 2.0)), "ratio_clamp"),
    (dict(num_bins=0), "num_bins"), (dict(ratio_ema=1.0), "ratio_ema"),
])
def test_constructor_names_the_bad_argument(kwargs, word):
    with pytest.raises(ValueError, match=word):
        LogRatioEstimator(**kwargs)


@pytest.mark.parametrize("kwargs, word", [
    (dict(), "`level` or `bins` is required"),
    (dict(level=torch.zeros(2), bins=torch.zeros(2, dtype=torch.long)), "not both"),
    (dict(bins=torch.tensor([0, 2])), "bins"), (dict(bins=torch.zeros(2)), "bins"),
    (dict(level=torch.zeros(3)), "level"), (dict(level=torch.tensor([0.0, math.nan])), "NaN"),
])
def test_call_names_the_bad_argument(kwargs, word):
    with pytest.raises(ValueError, match=word):
        LogRatioEstimator(num_bins=2)(torch.zeros(2), **kwargs)
