"""Issue 26 section 4: calibration, sample, diversity, generative and target metrics on bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from divmin.eval import (acceptance_rate, calibration_error, class_coverage, distinct_n, frechet_distance,
                         gaussian_frechet_distance, generative_perplexity, is_divergence, is_expectation, mode_stats,
                         precision_recall, self_bleu, sliced_wasserstein, top_label_calibration_error, unigram_entropy)

P, Y = torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0])


def test_calibration_error_refuses_all_zero_weights():
    with pytest.raises(ValueError, match="`weight`"):
        calibration_error(P, Y, weight=torch.zeros(2))


@pytest.mark.parametrize("kwargs", [dict(pred=torch.tensor([1.5, 0.5])), dict(pred=torch.tensor([math.nan, 0.5])),
                                    dict(outcome=torch.tensor([2.0, 0.0])), dict(weight=torch.tensor([-1.0, 2.0])),
                                    dict(weight=torch.tensor([math.inf, 1.0]))])
def test_calibration_error_refuses_values_outside_their_range(kwargs):
    args = dict(pred=P, outcome=Y) | kwargs
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=f"`{name}`"):
        calibration_error(args.pop("pred"), args.pop("outcome"), **args)


def test_calibration_error_weights_by_hand_and_refuses_numpy():
    # bins [0, 0.1) and [0.9, 1]: |0.05 - 0| * 1/4 + |0.95 - 1| * 3/4 = 0.05
    out = calibration_error(torch.tensor([0.05, 0.95]), torch.tensor([0.0, 1.0]), weight=torch.tensor([1.0, 3.0]))
    assert float(out) == pytest.approx(0.05)
    with pytest.raises(TypeError, match="`pred`"):
        calibration_error(np.array([0.5]), Y[:1])
    with pytest.raises(ValueError, match="`n_bins`"):
        calibration_error(P, Y, n_bins=True)


def test_top_label_calibration_error_refuses_labels_other_than_0_1():
    with pytest.raises(ValueError, match="`labels`"):
        top_label_calibration_error(P, torch.tensor([2.0, 0.0]))
    with pytest.raises(ValueError, match="`probs`"):
        top_label_calibration_error(torch.tensor([1.2, 0.0]), Y)


def test_precision_recall_refuses_nan_samples():
    with pytest.raises(ValueError, match="`fake`"):
        precision_recall(torch.tensor([[math.nan], [0.0], [1.0]]), torch.randn(4, 1), k=1)
    with pytest.raises(ValueError, match="`chunk`"):
        precision_recall(torch.randn(4, 1), torch.randn(4, 1), k=1, chunk=0)


def test_sample_metrics_refuse_bad_knobs_by_name():
    x = torch.randn(5, 2)
    with pytest.raises(ValueError, match="`p`"):
        sliced_wasserstein(x, x, p=math.nan)
    with pytest.raises(ValueError, match="`stds`"):
        mode_stats(x, x[:2], torch.ones(2), math.nan)
    with pytest.raises(ValueError, match="`coverage`"):
        mode_stats(x, x[:2], torch.ones(2), 1.0, coverage=math.nan)
    with pytest.raises(TypeError, match="`labels`"):
        class_coverage(torch.tensor([0.5]), 2)
    with pytest.raises(ValueError, match="`weights`"):
        class_coverage(torch.tensor([0, 1]), 2, weights=torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="`cov1`"):
        gaussian_frechet_distance(torch.zeros(2), torch.full((2, 2), math.nan), torch.zeros(2), torch.eye(2))
    with pytest.raises(TypeError, match="`a`"):
        frechet_distance(np.zeros((3, 2)), x)


def test_diversity_refuses_bad_sizes_and_bare_strings():
    with pytest.raises(TypeError, match="`n`"):
        distinct_n([["a", "b"]], 1.5)
    with pytest.raises(TypeError, match="`samples`"):
        distinct_n("ab ba", 2)
    with pytest.raises(TypeError, match="`samples\\[0\\]`"):
        self_bleu(["a b", "a b"])
    assert self_bleu([["a", "b", "c"], ["a", "b", "c"]], max_samples=None) == 1.0


class _Judge:
    def __init__(self, out):
        self.out = out

    def log_prob(self, seqs):
        return self.out


def test_generative_perplexity_refuses_nan_and_overflows_to_inf():
    x = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="`judge`: log_prob"):
        generative_perplexity(x, _Judge(torch.tensor([math.nan, 0.0])))
    with pytest.raises(TypeError, match="`judge`"):
        generative_perplexity(x, object())
    # mean NLL 1e4 nats per token: exp overflows float64, the perplexity is +inf (not an OverflowError)
    assert generative_perplexity(x, _Judge(torch.tensor([-3e4, -3e4], dtype=torch.float64))) == math.inf


def test_unigram_entropy_work_does_not_grow_with_the_id_range():
    x = torch.tensor([[0, 10**12], [10**12, 10**12]])
    assert unigram_entropy(x) == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))
    assert unigram_entropy(x, per_sequence=True) == pytest.approx(math.log(2) / 2)
    with pytest.raises(ValueError, match="`samples`"):
        unigram_entropy(torch.tensor([[-1, 0]]))


def test_target_metrics_refuse_an_infinite_log_z_and_bad_inputs():
    lq = torch.log(torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="`log_z`"):
        is_divergence(lq, lq, divergence="forward_kl", log_z=math.inf)
    with pytest.raises(ValueError, match="`log_z`"):
        acceptance_rate(lq, lq, log_z=math.nan)
    with pytest.raises(ValueError, match="`model_logps`"):
        is_expectation(torch.ones(2), torch.tensor([math.nan, 0.0]))
    with pytest.raises(TypeError, match="`model_logps`"):
        is_divergence(np.zeros(2), lq, divergence="forward_kl")
