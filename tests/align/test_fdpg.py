"""f-DPG: the surrogate's gradient against exact enumeration, and its special cases.

The estimator under fdpg_loss (every registry member against exact enumeration), the
self-normalised and running log Z and the moving baseline are tested in tests/estimators/.
"""

from __future__ import annotations

import math

import pytest
import torch

import divmin
from divmin.align import EnergyTarget, MovingBaseline, PointwiseConstraint, fdpg_loss
from divmin.data import BigramLM, PrefixTreeLM, all_sequences
from divmin.eval import exact_divergence

V, L = 4, 3


def _toy(seed: int = 0, epsilon: float = 0.05):
    """All V^L sequences, a random base, the constrained target (token 3 at least twice) and a policy."""
    g = torch.Generator().manual_seed(seed)
    seqs = all_sequences(V, L)
    base = PrefixTreeLM(V, L, generator=g).requires_grad_(False)
    target = EnergyTarget(base.log_prob) * PointwiseConstraint(lambda x: (x == 3).sum(1) >= 2, epsilon=epsilon)
    policy = BigramLM(V, L, scale=0.7, generator=g)
    return seqs, base, target, policy


def _grad(loss: torch.Tensor, policy: torch.nn.Module) -> torch.Tensor:
    (grad,) = torch.autograd.grad(loss, [policy.logits])
    return grad


@pytest.mark.parametrize("name", ["js", "forward_kl", "squared_hellinger"])
def test_exact_gradient_also_matches_the_categorical_closed_form(name):
    seqs, _, target, policy = _toy(seed=1)
    s = target.log_score(seqs)
    want = _grad(exact_divergence(policy.log_prob(seqs), s, divergence=name), policy)
    uniform = torch.full((len(seqs),), -math.log(len(seqs)))
    got = _grad(fdpg_loss(policy.log_prob(seqs), s, divergence=name, proposal_logps=uniform).loss, policy)
    assert torch.allclose(got, want, atol=1e-6, rtol=1e-4)


def test_reverse_kl_is_kl_regularised_policy_gradient_with_reward_log_p_minus_log_q():
    seqs, _, target, policy = _toy(seed=2)
    s_all = target.log_score(seqs)
    log_z = torch.logsumexp(s_all, 0)
    x = policy.sample(256, torch.Generator().manual_seed(0))
    logq = policy.log_prob(x)
    reward = (target.log_score(x) - log_z - logq).detach()  # log P - log Q
    want = _grad(-(reward * logq).mean(), policy)  # REINFORCE, no baseline
    got = _grad(fdpg_loss(policy.log_prob(x), target.log_score(x), divergence="reverse_kl", log_z=log_z,
                          baseline=1.0).loss, policy)  # g = 1 - log r: the constant 1 is a baseline
    assert torch.allclose(got, want, atol=1e-6, rtol=1e-5)


def test_forward_kl_is_dpg_importance_weighted_maximum_likelihood():
    seqs, base, target, policy = _toy(seed=3)
    log_z = torch.logsumexp(target.log_score(seqs), 0)
    x = base.sample(256, torch.Generator().manual_seed(1))  # offline: the base model is the proposal
    logq_prop = base.log_prob(x)
    log_p = target.log_score(x) - log_z
    want = _grad(-((log_p - logq_prop).exp() * policy.log_prob(x)).mean(), policy)
    got = _grad(fdpg_loss(policy.log_prob(x), target.log_score(x), divergence="forward_kl",
                          proposal_logps=logq_prop, log_z=log_z).loss, policy)
    assert torch.allclose(got, want, atol=1e-6, rtol=1e-5)


def test_online_mode_equals_the_policy_as_its_own_proposal():
    seqs, _, target, policy = _toy(seed=4)
    x = policy.sample(64, torch.Generator().manual_seed(2))
    s = target.log_score(x)
    a = fdpg_loss(policy.log_prob(x), s, divergence="js")
    b = fdpg_loss(policy.log_prob(x), s, divergence="js", proposal_logps=policy.log_prob(x).detach())
    assert torch.allclose(a.loss, b.loss) and torch.equal(a.weights, torch.ones(64))
    assert torch.allclose(a.pseudo_rewards, -divmin.divergence("js").g(a.log_ratio))


def test_self_normalised_log_z_is_exact_on_the_enumerated_space():
    seqs, _, target, policy = _toy(seed=5)
    s = target.log_score(seqs)
    uniform = torch.full((len(seqs),), -math.log(len(seqs)))
    a = fdpg_loss(policy.log_prob(seqs), s, proposal_logps=uniform)
    b = fdpg_loss(policy.log_prob(seqs), s, proposal_logps=uniform, log_z=torch.logsumexp(s, 0))
    assert torch.allclose(a.log_ratio, b.log_ratio, atol=1e-5)


@pytest.mark.parametrize("name", ["reverse_kl", "jeffreys", "neyman_chi2"])
def test_hard_constraint_with_f0_infinite_raises_with_advice(name):
    _, _, target, policy = _toy(seed=7, epsilon=0.0)
    x = all_sequences(V, L)
    with pytest.raises(ValueError, match="smooth the constraint"):
        fdpg_loss(policy.log_prob(x), target.log_score(x), divergence=name)


def test_hard_constraint_is_fine_for_js():
    _, _, target, policy = _toy(seed=7, epsilon=0.0)
    x = all_sequences(V, L)
    out = fdpg_loss(policy.log_prob(x), target.log_score(x), divergence="js")
    out.loss.backward()
    assert torch.isfinite(policy.logits.grad).all()


@pytest.mark.parametrize("kwargs, err, word", [
    (dict(target_log_scores=torch.zeros(3)), ValueError, "target_log_scores"),
    (dict(proposal_logps=torch.zeros(5)), ValueError, "proposal_logps"),
    (dict(baseline="x"), TypeError, "baseline"),
    (dict(divergence="nope"), ValueError, "valid names"),
])
def test_bad_arguments_name_the_argument(kwargs, err, word):
    args = dict(policy_logps=torch.zeros(4, requires_grad=True), target_log_scores=torch.zeros(4))
    args.update(kwargs)
    with pytest.raises(err, match=word):
        fdpg_loss(args.pop("policy_logps"), args.pop("target_log_scores"), **args)


def _train(policy, target, seqs, name, *, exact: bool, steps: int, seed: int = 0) -> float:
    """Adam on the f-DPG surrogate: all sequences (exact gradient) or 256 policy samples per step."""
    opt = torch.optim.Adam(policy.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(seed)
    s_all = target.log_score(seqs)
    log_z = torch.logsumexp(s_all, 0)
    uniform = torch.full((len(seqs),), -math.log(len(seqs)))
    baseline = MovingBaseline(0.9)
    for _ in range(steps):
        if exact:
            out = fdpg_loss(policy.log_prob(seqs), s_all, divergence=name, proposal_logps=uniform, log_z=log_z)
        else:
            x = policy.sample(256, gen)
            out = fdpg_loss(policy.log_prob(x), target.log_score(x), divergence=name, log_z=log_z,
                            baseline=baseline())
            baseline.update(out)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    with torch.no_grad():
        return float(exact_divergence(policy.log_prob(seqs), s_all, divergence=name))


@pytest.mark.parametrize("name", ["js", "forward_kl", "reverse_kl"])
def test_monte_carlo_training_reaches_the_exact_gradient_optimum(name):
    seqs, _, target, policy = _toy(seed=8)
    start = float(exact_divergence(policy.log_prob(seqs).detach(), target.log_score(seqs), divergence=name))
    optimum = _train(BigramLM(V, L), target, seqs, name, exact=True, steps=400)
    mc = _train(policy, target, seqs, name, exact=False, steps=250)
    assert optimum < 0.5 * start  # the toy is not trivial: training matters ...
    assert optimum > 1e-3  # ... and the bigram policy cannot represent the target exactly
    assert mc <= optimum + 0.05 * (start - optimum), (name, start, optimum, mc)
