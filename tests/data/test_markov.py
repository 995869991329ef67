"""`MarkovLanguage`: a distribution (sums to 1 by enumeration), exact entropy, sampling matches log_prob."""

from __future__ import annotations

import math

import pytest
import torch

from divmin.data import MarkovLanguage, all_sequences, check_token_ids


@pytest.mark.parametrize("order", [1, 2])
def test_log_prob_is_a_distribution_and_entropy_is_exact(order):
    lang = MarkovLanguage(3, 5, order=order, sharpness=1.5, seed=3)
    log_p = lang.log_prob(all_sequences(3, 5))  # every one of the 243 sequences
    assert log_p.dtype == torch.float64
    assert float(torch.logsumexp(log_p, 0)) == pytest.approx(0.0, abs=1e-12)
    brute = float(-(log_p.exp() * log_p).sum())  # H by enumeration, independent of the propagation
    assert lang.sequence_entropy() == pytest.approx(brute, rel=1e-10)
    assert lang.entropy_rate == pytest.approx(brute / 5, rel=1e-10)


@pytest.mark.parametrize("order", [1, 2])
def test_sample_frequencies_match_log_prob(order):
    """Chi-square of 20k samples over the 27 sequences of V=3, L=3 against exp(log_prob)."""
    lang = MarkovLanguage(3, 3, order=order, sharpness=1.0, seed=1)
    seqs = all_sequences(3, 3)
    p = lang.log_prob(seqs).exp()
    n = 20000
    x = lang.sample(n, torch.Generator().manual_seed(0))
    counts = torch.bincount(x[:, 0] * 9 + x[:, 1] * 3 + x[:, 2], minlength=27).double()
    chi2 = float(((counts - n * p) ** 2 / (n * p)).sum())
    assert chi2 < 26 + 6 * math.sqrt(2 * 26)  # 26 degrees of freedom: mean 26, std sqrt(52)


def test_own_samples_have_perplexity_exp_entropy_rate():
    lang = MarkovLanguage(32, 16, sharpness=2.0, seed=0)
    x = lang.sample(4000, torch.Generator().manual_seed(1))
    nll = lang.nll_per_token(x)
    se = float(nll.std()) / math.sqrt(len(nll))
    assert float(nll.mean()) == pytest.approx(lang.entropy_rate, abs=5 * se)
    assert lang.entropy_rate < math.log(32) - 0.5  # far from uniform
    assert MarkovLanguage(5, 4, sharpness=0.0).entropy_rate == pytest.approx(math.log(5))


def test_sampling_is_reproducible():
    lang = MarkovLanguage(16, 8, seed=2)
    a, b = (lang.sample(5, torch.Generator().manual_seed(7)) for _ in range(2))
    assert torch.equal(a, b) and a.shape == (5, 8)
    assert not torch.equal(lang.tables[-1], MarkovLanguage(16, 8, seed=3).tables[-1])


def test_bad_inputs_name_the_argument():
    lang = MarkovLanguage(4, 3)
    with pytest.raises(ValueError, match="`seqs`.*longer than the model's 3"):
        lang.log_prob(torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="`seqs` must have length 3"):
        lang.log_prob(torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="`seqs` holds unknown token ids"):
        lang.log_prob(torch.tensor([[0, 1, 4]]))
    with pytest.raises(TypeError, match="`seqs` must hold integer"):
        lang.log_prob(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="`order`"):
        MarkovLanguage(4, 5, order=3)
    with pytest.raises(ValueError, match="`length`"):
        MarkovLanguage(4, 2, order=2)
    with pytest.raises(TypeError, match="`vocab_size`"):
        MarkovLanguage(4.0, 3)
    with pytest.raises(TypeError, match="`ids`"):
        check_token_ids([[0]], "ids", vocab_size=2)
