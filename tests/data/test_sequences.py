"""Enumerable sequence spaces: exact log-probabilities agree with sampling and normalise."""

from __future__ import annotations

import pytest
import torch

from divmin.data import BigramLM, PrefixTreeLM, all_sequences


def test_all_sequences_enumerates_lexicographically():
    x = all_sequences(3, 2)
    assert x.tolist()[:4] == [[0, 0], [0, 1], [0, 2], [1, 0]] and len(x) == 9
    with pytest.raises(ValueError, match="too many"):
        all_sequences(50, 5)


@pytest.mark.parametrize("cls", [PrefixTreeLM, BigramLM])
def test_log_probs_normalise_and_match_sample_frequencies(cls):
    model = cls(3, 3, scale=1.0, generator=torch.Generator().manual_seed(0))
    x = all_sequences(3, 3)
    p = model.log_prob(x).detach().exp()
    assert float(p.sum()) == pytest.approx(1.0, abs=1e-6)
    s = model.sample(100000, torch.Generator().manual_seed(1))
    freq = torch.bincount((s * torch.tensor([9, 3, 1])).sum(1), minlength=27).float() / len(s)
    assert torch.allclose(freq, p, atol=4 * (p * (1 - p) / len(s)).sqrt().max().item() + 1e-3)


def test_prefix_tree_can_represent_any_distribution_and_bigram_cannot():
    """Fit both to a random target by exact maximum likelihood: the prefix tree gets KL ~ 0."""
    x = all_sequences(3, 3)
    target = torch.softmax(3 * torch.randn(27, generator=torch.Generator().manual_seed(2)), 0)
    kls = {}
    for cls in (PrefixTreeLM, BigramLM):
        model = cls(3, 3)
        opt = torch.optim.Adam(model.parameters(), lr=0.1)
        for _ in range(500):
            loss = -(target * model.log_prob(x)).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        kls[cls.__name__] = float((target * (target.log() - model.log_prob(x).detach())).sum())
    assert kls["PrefixTreeLM"] < 1e-3 < 0.05 < kls["BigramLM"], kls


def test_bad_sequences_raise():
    model = BigramLM(3, 2)
    with pytest.raises(ValueError, match="seqs"):
        model.log_prob(torch.zeros(4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="seqs"):
        model.log_prob(torch.full((4, 2), 7))
