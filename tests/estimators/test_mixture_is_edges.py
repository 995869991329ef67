"""Issue 26 section 4: the pooled / importance-sampled estimators on extreme and malformed input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from divmin.estimators import effective_sample_size, importance_mean, mixture_log_density, pooled_divergence

LQ = torch.log(torch.tensor([0.5, 0.5], dtype=torch.float64))


def test_ess_of_a_huge_log_weight_is_its_share_not_an_error():
    # weights (e^1e308, 1): one sample carries everything, Kish's ESS is 1 / N
    assert effective_sample_size(torch.tensor([1e308, 0.0], dtype=torch.float64)) == pytest.approx(0.5)
    assert effective_sample_size(torch.tensor([1e38, 1e38, -math.inf])) == pytest.approx(2 / 3)


def test_ess_refuses_non_tensors_by_name():
    with pytest.raises(TypeError, match="`log_weights`"):
        effective_sample_size(np.zeros(3))
    with pytest.raises(ValueError, match="`log_weights`"):
        effective_sample_size(torch.tensor(0.0))


def test_importance_mean_with_a_weight_beyond_float64_is_exact_when_the_product_is_finite():
    # w = e^710 (beyond float64), v = e^-700: mean = (e^10 + 0) / 2, formed in log space
    values = torch.tensor([math.exp(-700.0), 0.0], dtype=torch.float64)
    lq, lp = torch.zeros(2, dtype=torch.float64), torch.tensor([-710.0, 0.0], dtype=torch.float64)
    assert importance_mean(values, lq, lp) == pytest.approx(math.exp(10.0) / 2, rel=1e-12)
    # w = e^720 with v = 1 overflows: the error blames the weights, not `values`
    with pytest.raises(ValueError, match="exp\\(`model_logps` - `proposal_logps`\\)") as info:
        importance_mean(torch.ones(2, dtype=torch.float64), lq, torch.tensor([-720.0, 0.0], dtype=torch.float64))
    assert "`values` is" not in str(info.value)


def test_importance_mean_matches_the_plain_sum_with_signs():
    lq = torch.log(torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64))
    lp = torch.log(torch.tensor([0.4, 0.4, 0.2], dtype=torch.float64))
    v = torch.tensor([-3.0, 2.0, 0.5], dtype=torch.float64)
    assert importance_mean(v, lq, lp) == pytest.approx(float((torch.exp(lq - lp) * v).mean()), rel=1e-14)


def test_pooled_divergence_refuses_an_infinite_log_z():
    with pytest.raises(ValueError, match="`log_z`"):
        pooled_divergence(LQ, LQ, LQ[None], [2], divergence="forward_kl", log_z=math.inf)


@pytest.mark.parametrize("div", ["forward_kl", "reverse_kl", "js", "total_variation"])
def test_pooled_divergence_p_equals_q_far_from_the_proposal_is_zero(div):
    far = torch.full((1, 2), -1000.0, dtype=torch.float64)
    assert pooled_divergence(LQ, LQ, far, [2], divergence=div, log_z=0.0) == 0.0


def test_pooled_divergence_refuses_zero_dim_and_numpy_input():
    with pytest.raises(ValueError, match="`model_logps`"):
        pooled_divergence(torch.tensor(0.0), torch.tensor(0.0), torch.tensor(0.0), [1], divergence="forward_kl",
                          log_z=0.0)
    with pytest.raises(TypeError, match="`model_logps`"):
        pooled_divergence(np.zeros(2), np.zeros(2), np.zeros((1, 2)), [2], divergence="forward_kl", log_z=0.0)


def test_pooled_divergence_refuses_samples_no_proposal_could_draw_and_overflow():
    props = torch.tensor([[-math.inf, math.log(0.5)]], dtype=torch.float64)
    with pytest.raises(ValueError, match="`proposal_logps`"):
        pooled_divergence(LQ, LQ, props, [2], divergence="forward_kl", log_z=0.0)
    with pytest.raises(ValueError, match="overflows"):  # Q / M = e^999 and r = 2: the estimate is beyond float64
        pooled_divergence(LQ, LQ + math.log(2.0), torch.full((1, 2), -1000.0, dtype=torch.float64), [2],
                          divergence="forward_kl", log_z=0.0)


def test_mixture_log_density_refuses_fractional_counts():
    with pytest.raises(TypeError, match="`counts`"):
        mixture_log_density(LQ[None], [1.5])
    with pytest.raises(ValueError, match="`proposal_logps`"):
        mixture_log_density(torch.tensor([[math.nan, 0.0]]), [2])
