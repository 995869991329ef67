"""distinct-n and self-BLEU on hand-computed cases."""

from __future__ import annotations

import math

import pytest

from divmin.eval import distinct_n, self_bleu


def test_distinct_n():
    assert distinct_n([["a", "b", "a", "b"]], 2) == pytest.approx(2 / 3)
    assert distinct_n([["a", "b"], ["a", "b"]], 1) == pytest.approx(2 / 4)
    assert distinct_n([["a"]], 2) == 0.0
    with pytest.raises(ValueError, match="`n`"):
        distinct_n([["a"]], 0)


def test_self_bleu_extremes():
    assert self_bleu([list("abcd")] * 3) == pytest.approx(1.0)
    assert self_bleu([list("abcd"), list("efgh"), list("ijkl")]) == 0.0


def test_self_bleu_by_hand_with_max_n_2():
    # hyp "a b c" vs ref "a b d": unigram 2/3, bigram (1 + 1) / (2 + 1), same length -> no brevity penalty
    want = math.sqrt((2 / 3) * (2 / 3))
    assert self_bleu([list("abc"), list("abd")], max_n=2) == pytest.approx(want)
    # a shorter hypothesis pays the brevity penalty exp(1 - ref / hyp)
    short = self_bleu([list("ab"), list("abcd")], max_n=1)
    assert short == pytest.approx((math.exp(1 - 4 / 2) * 1.0 + 2 / 4) / 2)


def test_self_bleu_needs_two_samples():
    with pytest.raises(ValueError, match="2 samples"):
        self_bleu([["a"]])
