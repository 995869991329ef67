"""Exact generative perplexity and unigram entropy against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from divmin.data import MarkovLanguage
from divmin.eval import generative_perplexity, unigram_entropy


def test_generative_perplexity_is_exp_mean_nll_per_token():
    lang = MarkovLanguage(6, 4, order=1, seed=5)
    x = lang.sample(50, torch.Generator().manual_seed(0))
    by_hand = math.exp(-sum(float(lang.log_prob(x[i:i + 1])) for i in range(50)) / (50 * 4))
    assert generative_perplexity(x, lang) == pytest.approx(by_hand, rel=1e-12)


def test_own_samples_reach_exp_entropy_rate_and_uniform_noise_is_worse():
    lang = MarkovLanguage(32, 16, seed=0)
    gen = torch.Generator().manual_seed(0)
    ppl = generative_perplexity(lang.sample(4000, gen), lang)
    assert ppl == pytest.approx(math.exp(lang.entropy_rate), rel=0.03)
    noise = torch.randint(32, (4000, 16), generator=gen)
    assert generative_perplexity(noise, lang) > 32  # exp(cross-entropy) of uniform tokens exceeds V here


def test_unigram_entropy():
    x = torch.tensor([[0, 0, 1, 2]])
    f = torch.tensor([0.5, 0.25, 0.25])
    assert unigram_entropy(x) == pytest.approx(float(-(f * f.log()).sum()))
    assert unigram_entropy(torch.zeros(3, 5, dtype=torch.long), vocab_size=7) == 0.0
    with pytest.raises(ValueError, match="`samples` holds token ids outside"):
        unigram_entropy(x, vocab_size=2)
    with pytest.raises(TypeError, match="`samples`"):
        unigram_entropy(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="`samples`"):
        generative_perplexity(torch.zeros(3, dtype=torch.long), MarkovLanguage(4, 3))


def test_per_sequence_unigram_entropy_is_the_mean_of_each_rows_entropy():
    x = torch.tensor([[0, 0, 0, 0], [0, 1, 2, 3], [1, 1, 2, 2]])
    assert unigram_entropy(x, per_sequence=True) == pytest.approx((0 + math.log(4) + math.log(2)) / 3)
    assert unigram_entropy(x, 5, per_sequence=True) == pytest.approx(unigram_entropy(x, per_sequence=True))
