"""Pooled (balance-heuristic) importance sampling of D_f(P || Q), checked against exact enumeration."""

from __future__ import annotations

import math

import pytest
import torch

from divmin.estimators import effective_sample_size, mixture_log_density, pooled_divergence
from divmin.divergences import as_divergence
from divmin.eval import exact_divergence

K = 30  # points of the enumerated space
DIVS = ("forward_kl", "reverse_kl", "js", "total_variation", "squared_hellinger")


def _logp(seed: int, scale: float = 2.0) -> torch.Tensor:
    return torch.log_softmax(scale * torch.randn(K, generator=torch.Generator().manual_seed(seed),
                                                 dtype=torch.float64), 0)


def test_ess_is_kish_formula():
    w = torch.tensor([0.5, 1.0, 2.0, 0.0], dtype=torch.float64)
    assert effective_sample_size(w.log()) == pytest.approx(float(w.sum() ** 2 / (w ** 2).sum() / 4))
    assert effective_sample_size(torch.zeros(7)) == pytest.approx(1.0)
    assert effective_sample_size(torch.full((3,), -math.inf)) == 0.0
    with pytest.raises(ValueError):
        effective_sample_size(torch.tensor([0.0, math.nan]))


def test_mixture_density_by_hand():
    q = torch.tensor([[0.2, 0.8, 0.1, 0.3], [0.6, 0.4, 0.5, 0.2]], dtype=torch.float64)  # q_k(x_i), 4 samples
    got = mixture_log_density(q.log(), [1, 3]).exp()
    assert torch.allclose(got, 0.25 * q[0] + 0.75 * q[1])
    with pytest.raises(ValueError, match="counts"):
        mixture_log_density(q.log(), [1, 2, 3])  # three counts for two proposals
    with pytest.raises(ValueError, match="sum to"):
        pooled_divergence(q[0].log(), q[1].log(), q.log(), [1, 2], divergence="js", log_z=0.0)


@pytest.mark.parametrize("div", DIVS)
def test_expectation_is_exact_by_enumeration(div):
    """E[estimate] = sum_x sum_k n_k q_k(x) (per-sample term) / N, computed over every x: the exact D_f."""
    logq, s, base = _logp(0), _logp(1) + 3.0, _logp(2)  # s unnormalised: log Z = 3
    counts = [5, 11]
    props = torch.stack([base, logq])
    # every point once, with the expected number of times it is drawn as its multiplicity
    mult = (torch.tensor(counts, dtype=torch.float64)[:, None] * props.exp()).sum(0)  # (K,)
    log_m = mixture_log_density(props, counts)
    r_terms = torch.exp(logq - log_m) * as_divergence(div).f(s - 3.0 - logq)
    expected = float((mult * r_terms).sum() / sum(counts))
    exact = float(exact_divergence(logq, s, divergence=div))
    assert expected == pytest.approx(exact, rel=1e-10)
    # the function itself, fed every point with weight-matched duplicates, agrees with the same sum
    est = pooled_divergence(logq, s, props, [K // 2, K - K // 2], divergence=div, log_z=3.0)
    manual = float((torch.exp(logq - mixture_log_density(props, [K // 2, K - K // 2]))
                    * as_divergence(div).f(s - 3.0 - logq)).mean())
    assert est == pytest.approx(manual, rel=1e-12)


def _draw(logp: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    return torch.multinomial(logp.exp(), n, replacement=True, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("div", ("forward_kl", "reverse_kl", "js"))
def test_sampled_estimate_converges_where_single_proposal_weights_are_heavy(div):
    """Q far from the base a; P = a (b + eps) / Z. Pooling a and Q samples gets within 3% of exact."""
    base = _logp(3, scale=1.0)
    b = (torch.arange(K) % 3 == 0).double()
    s = base + torch.log(b + 1e-2)
    logq = torch.log_softmax(s + 2.5 * _logp(4, scale=1.0), 0)  # sharpened, shifted away from P
    n_a, n_q = 20000, 20000
    x = torch.cat([_draw(base, n_a, 5), _draw(logq, n_q, 6)])
    props = torch.stack([base[x], logq[x]])
    log_z = float(torch.logsumexp(s, 0))
    est = pooled_divergence(logq[x], s[x], props, [n_a, n_q], divergence=div, log_z=log_z)
    assert est == pytest.approx(float(exact_divergence(logq, s, divergence=div)), rel=0.03)


def test_rejects_bad_shapes():
    lq = torch.log(torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="`target_log_scores` must have shape"):
        pooled_divergence(lq, lq[:1], lq[None], [2], divergence="js", log_z=0.0)


def _all_draws(logq_prop: torch.Tensor, n: int):
    """Every ordered sample of n points from q over the K-point space, with its probability."""
    idx = torch.cartesian_prod(*[torch.arange(K)] * n) if n > 1 else torch.arange(K)[:, None]
    return idx, logq_prop[idx].sum(1).exp()


def test_importance_mean_is_unbiased_by_enumeration_where_self_normalised_is_not():
    """Over every draw of N = 2 samples from q: E[importance_mean] = E_Q[v] exactly; the self-normalised
    pi/q estimate (the old f-DPG offline metric) misses by far more than rounding."""
    from divmin.estimators import importance_mean
    from divmin.eval import is_expectation

    logq, prop = _logp(7), _logp(8, scale=1.0)
    v = torch.randn(K, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    exact = float((logq.exp() * v).sum())
    idx, prob = _all_draws(prop, 2)
    unbiased = sum(float(p) * importance_mean(v[i], logq[i], prop[i]) for i, p in zip(idx, prob))
    self_norm = sum(float(p) * is_expectation(v[i], logq[i], prop[i]) for i, p in zip(idx, prob))
    assert unbiased == pytest.approx(exact, rel=1e-9, abs=1e-12)
    assert abs(self_norm - exact) > 1e-3, (self_norm, exact)


def test_importance_mean_by_hand_and_refusals():
    from divmin.estimators import importance_mean

    lq, lp = torch.log(torch.tensor([0.9, 0.1, 0.0])), torch.log(torch.tensor([0.5, 0.25, 0.25]))
    # (0.9/0.5 * 2 + 0.1/0.25 * 3 + 0 * inf) / 3: a zero weight drops an infinite value
    assert importance_mean(torch.tensor([2.0, 3.0, math.inf]), lq, lp) == pytest.approx((3.6 + 1.2) / 3)
    with pytest.raises(ValueError, match="undefined"):
        importance_mean(torch.tensor([2.0, math.inf, 0.0]), lq, lp)
    with pytest.raises(ValueError, match="q\\(x\\) > 0"):
        importance_mean(torch.ones(3), lq, torch.log(torch.tensor([0.5, 0.5, 0.0])))
    with pytest.raises(ValueError, match="`model_logps` must have shape"):
        importance_mean(torch.ones(2), lq, lp)


def test_fdpg_offline_divergence_is_unbiased_by_enumeration():
    """The estimate the offline f-DPG trainer logs (pooled_divergence with its one proposal and the running
    log Z), averaged over every draw of N = 2 from q, is the exact D_f(P || pi) for each member."""
    logpi, prop, s = _logp(10), _logp(11, scale=1.0), _logp(12) + 1.5
    idx, prob = _all_draws(prop, 2)
    for div in ("forward_kl", "reverse_kl", "total_variation", "js"):
        mean = sum(float(p) * pooled_divergence(logpi[i], s[i], prop[i][None], [2], divergence=div, log_z=1.5)
                   for i, p in zip(idx, prob))
        assert mean == pytest.approx(float(exact_divergence(logpi, s, divergence=div)), rel=1e-9), div
