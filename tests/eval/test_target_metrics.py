"""Importance-sampled and exact divergences to a target, against scipy and enumeration."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr

from divmin.data import BigramLM, PrefixTreeLM, all_sequences
from divmin.eval import acceptance_rate, exact_divergence, is_divergence, is_expectation, target_metrics
from tests.divergences.conftest import members

V, L = 4, 3


def _pair(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = all_sequences(V, L)
    log_p = PrefixTreeLM(V, L, generator=g).log_prob(x).detach()
    log_q = BigramLM(V, L, scale=1.0, generator=g).log_prob(x).detach()
    return x, log_p, log_q


def test_exact_divergences_match_scipy():
    _, log_p, log_q = _pair()
    p, q = log_p.double().exp().numpy(), log_q.double().exp().numpy()
    assert float(exact_divergence(log_q, log_p, divergence="forward_kl")) == pytest.approx(rel_entr(p, q).sum(), rel=1e-5)
    assert float(exact_divergence(log_q, log_p, divergence="reverse_kl")) == pytest.approx(rel_entr(q, p).sum(), rel=1e-5)
    assert float(exact_divergence(log_q, log_p, divergence="total_variation")) == pytest.approx(0.5 * np.abs(p - q).sum(),
                                                                                    rel=1e-5)
    # scipy's JS distance is sqrt of the (1/2-scaled) divergence; ours is unscaled (DESIGN.md)
    assert float(exact_divergence(log_q, log_p, divergence="js")) == pytest.approx(2 * jensenshannon(p, q) ** 2, rel=1e-4)


@members
def test_enumerating_with_a_uniform_proposal_is_exact(div):
    _, log_p, log_q = _pair(1)
    uniform = torch.full_like(log_q, -math.log(len(log_q)))
    got = is_divergence(log_q, log_p + 3.0, divergence=div, proposal_logps=uniform)  # unnormalised scores: Z estimated
    want = float(exact_divergence(log_q, log_p, divergence=div))
    assert got == pytest.approx(want, rel=1e-4, abs=1e-6)


def test_monte_carlo_estimates_approach_the_exact_values():
    _, log_p, log_q = _pair(2)
    g = torch.Generator().manual_seed(0)
    idx = torch.multinomial(log_q.exp(), 40000, replacement=True, generator=g)
    est = target_metrics(log_q[idx], log_p[idx], log_z=0.0)
    for value, name in zip(est, ("forward_kl", "reverse_kl", "total_variation", "js")):
        assert value == pytest.approx(float(exact_divergence(log_q, log_p, divergence=name)), rel=0.05, abs=0.01), name


def test_is_expectation_reweights_a_proposal():
    _, log_p, log_q = _pair(3)
    values = torch.arange(len(log_q), dtype=torch.float32)
    g = torch.Generator().manual_seed(1)
    idx = torch.multinomial(log_p.exp(), 50000, replacement=True, generator=g)  # proposal = P
    got = is_expectation(values[idx], log_q[idx], proposal_logps=log_p[idx])
    want = float((log_q.exp() * values).sum())
    assert got == pytest.approx(want, rel=0.03)


def test_shape_errors_name_the_arguments():
    with pytest.raises(ValueError, match="target_log_scores"):
        is_divergence(torch.zeros(4), torch.zeros(3), divergence="js")
    with pytest.raises(ValueError, match="values"):
        is_expectation(torch.zeros(3), torch.zeros(4))


def test_acceptance_rate_is_one_over_the_max_ratio_and_rejection_sampling_agrees():
    _, log_p, log_q = _pair(4)
    want = float(torch.exp(-(log_p - log_q).max()))
    assert acceptance_rate(log_q, log_p + 2.0, log_z=2.0) == pytest.approx(want, rel=1e-6)
    assert acceptance_rate(log_q, log_q, log_z=0.0) == pytest.approx(1.0)
    # simulate the rejection sampler: propose from Q, accept with P / (M Q)
    g = torch.Generator().manual_seed(5)
    idx = torch.multinomial(log_q.exp(), 200000, replacement=True, generator=g)
    accept = torch.rand(len(idx), generator=g) < (log_p - log_q)[idx].exp() * want
    assert float(accept.float().mean()) == pytest.approx(want, rel=0.05)
