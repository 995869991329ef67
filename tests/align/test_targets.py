"""Energy-based targets: composition, constraints and importance-sampled moment matching."""

from __future__ import annotations

import pytest
import torch

from divmin.align import DistributionalConstraint, EnergyTarget, PointwiseConstraint, RewardTilt, fit_moments
from divmin.data import PrefixTreeLM, all_sequences

V, L = 5, 4


def _base(seed=0):
    return PrefixTreeLM(V, L, generator=torch.Generator().manual_seed(seed)).requires_grad_(False)


def test_composition_adds_log_factors():
    base = _base()
    x = all_sequences(V, L)
    b = PointwiseConstraint(lambda s: s[:, 0] == 2, epsilon=0.1)
    tilt = RewardTilt(lambda s: (s == 4).sum(1).float(), beta=0.5)
    t = EnergyTarget(base.log_prob) * b * tilt
    want = base.log_prob(x) + torch.log((x[:, 0] == 2).float() + 0.1) + 2.0 * (x == 4).sum(1)
    assert torch.allclose(t.log_score(x), want)
    assert torch.equal(b.satisfied(x), x[:, 0] == 2)


def test_hard_constraint_target_is_the_base_restricted_and_renormalised():
    base = _base(1)
    x = all_sequences(V, L)
    keep = (x == 3).sum(1) >= 2
    t = EnergyTarget(base.log_prob) * PointwiseConstraint(lambda s: (s == 3).sum(1) >= 2)
    p = torch.softmax(t.log_score(x), 0)
    a = base.log_prob(x).exp()
    assert torch.allclose(p, torch.where(keep, a, 0) / a[keep].sum(), atol=1e-7)


def test_reward_tilt_is_the_kl_regularised_rlhf_optimum():
    """argmax_Q E_Q[r] - beta KL(Q || a) is a exp(r / beta) / Z: check it beats perturbations."""
    base = _base(2)
    x = all_sequences(V, L)
    r = torch.randn(len(x), generator=torch.Generator().manual_seed(0))
    beta = 0.7
    t = EnergyTarget(base.log_prob) * RewardTilt(lambda s: r, beta=beta)
    log_a = base.log_prob(x)

    def objective(logq):
        return float((logq.exp() * (r - beta * (logq - log_a))).sum())

    best = torch.log_softmax(t.log_score(x), 0)
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        other = torch.log_softmax(best + 0.1 * torch.randn(len(x), generator=gen), 0)
        assert objective(best) > objective(other)


def _features(s):
    return torch.stack([(s == 3).float().mean(1), (s[:, 0] == 0).float()], 1)


def test_lambda_fit_reaches_the_requested_moments_exactly_by_enumeration():
    base = _base(3)
    gen = torch.Generator().manual_seed(2)
    x = base.sample(20000, gen)
    constraint = DistributionalConstraint(_features, moments=(0.5, 0.3))
    fitted = constraint.fit(x, torch.zeros(len(x)))  # samples from the base itself: log a - log q = 0
    target = EnergyTarget(base.log_prob) * fitted
    everything = all_sequences(V, L)
    p = torch.softmax(target.log_score(everything), 0)
    exact_moments = p @ _features(everything)
    assert torch.allclose(exact_moments, torch.tensor([0.5, 0.3]), atol=0.02), exact_moments
    base_moments = base.log_prob(everything).exp() @ _features(everything)
    assert (base_moments - torch.tensor([0.5, 0.3])).abs().max() > 0.1  # the fit had work to do


def test_moment_fit_is_exact_on_weighted_enumeration():
    x = all_sequences(V, L)
    log_a = _base(4).log_prob(x)
    uniform = torch.full((len(x),), -torch.log(torch.tensor(float(len(x)))))
    fit = fit_moments(_features(x), log_a - uniform, torch.tensor([0.45, 0.6]))
    p = torch.softmax(log_a + _features(x) @ fit.lambdas, 0)
    assert fit.max_error < 1e-5
    assert torch.allclose(p @ _features(x), torch.tensor([0.45, 0.6]), atol=1e-4)


def test_unreachable_moments_warn():
    x = all_sequences(V, L)
    with pytest.warns(UserWarning, match="outside"):
        fit_moments(_features(x), torch.zeros(len(x)), torch.tensor([1.5, 0.5]), max_iter=30)


@pytest.mark.parametrize("make, err", [
    (lambda: PointwiseConstraint(bool, epsilon=-1.0), "epsilon"),
    (lambda: RewardTilt(len, beta=0.0), "beta"),
    (lambda: DistributionalConstraint(len, moments=(0.1,), lambdas=(1.0, 2.0)), "lambdas"),
    (lambda: EnergyTarget().log_score([1, 2]), "base_logps"),
    (lambda: EnergyTarget(len) * 3, "callable"),
])
def test_bad_targets_raise(make, err):
    with pytest.raises((ValueError, TypeError), match=err):
        make()


def test_vader_sentiment_scorer_builds_a_sentiment_target():
    pytest.importorskip("vaderSentiment")
    from divmin.align import vader_sentiment

    score = vader_sentiment()
    texts = ["cats are great and happy", "dogs are awful", "the tree is green"]
    s = score(texts)
    assert s[0] > 0.5 and s[1] < -0.3 and abs(float(s[2])) < 0.1
    target = EnergyTarget(lambda t: torch.zeros(len(t))) * PointwiseConstraint(lambda t: score(t) > 0.5)
    assert target.log_score(texts).tolist() == [0.0, float("-inf"), float("-inf")]
    with pytest.raises(ValueError, match="field"):
        vader_sentiment("joy")
    with pytest.raises(TypeError, match="sequence"):
        score("one string")
