"""Parity with scikit-learn's clustering-metric tests, ``sklearn/metrics/cluster/tests/test_supervised.py``.

divmin's ``nmi`` / ``ari`` delegate to scikit-learn after their own input checks, so each case is held
both to upstream's expected values (and tolerances) and to an independent contingency-table formula
written here. Deliberate difference: empty label arrays, which scikit-learn scores 1.0, are refused
with a ValueError naming the argument (a clustering of nothing has no score).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from divmin.eval import ari, nmi  # noqa: E402


def _table(a, b):
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    t = np.zeros((ia.max() + 1, ib.max() + 1))
    np.add.at(t, (ia, ib), 1)
    return t


def _ari_formula(a, b):
    """Hubert & Arabie's adjusted Rand index from pair counts."""
    t = _table(a, b)
    n = t.sum()
    comb = lambda x: x * (x - 1) / 2  # noqa: E731
    index, rows, cols = comb(t).sum(), comb(t.sum(1)).sum(), comb(t.sum(0)).sum()
    expected = rows * cols / comb(n)
    top = 0.5 * (rows + cols)
    return 1.0 if top == expected else (index - expected) / (top - expected)


def _nmi_formula(a, b):
    """I(A; B) / mean(H(A), H(B)), arithmetic mean (scikit-learn's default), in nats."""
    t = _table(a, b) / len(a)
    pa, pb = t.sum(1), t.sum(0)
    nz = t > 0
    mi = (t[nz] * np.log(t[nz] / np.outer(pa, pb)[nz])).sum()
    ha, hb = -(pa * np.log(pa)).sum(), -(pb * np.log(pb)).sum()
    if ha == hb == 0:
        return 1.0
    return max(mi, 0.0) / (0.5 * (ha + hb))


PERFECT = [([0], [1]), ([0, 0, 0], [0, 0, 0]), ([0, 1, 0], [42, 7, 42]), ([0.0, 1.0, 0.0], [42.0, 7.0, 42.0]),
           ([0.0, 1.0, 2.0], [42.0, 7.0, 2.0]), ([0, 1, 2], [42, 7, 2])]


@pytest.mark.parametrize("score", [nmi, ari])
@pytest.mark.parametrize("a, b", PERFECT)
def test_perfect_matches(score, a, b):
    """test_perfect_matches (pytest.approx(1.0)); float labels holding integers are accepted as upstream."""
    assert score(a, b) == pytest.approx(1.0)


@pytest.mark.parametrize("score", [nmi, ari])
def test_empty_labels_are_refused_not_scored_one(score):
    with pytest.raises(ValueError, match="`labels_true` is empty"):
        score([], [])


def test_non_consecutive_labels():
    """test_non_consecutive_labels: ARI 0.24 to 2 decimals, gaps in the label values change nothing."""
    for pred in ([0, 1, 0, 1, 2, 2], [0, 4, 0, 4, 2, 2]):
        assert ari([0, 0, 0, 1, 1, 1], pred) == pytest.approx(0.24, abs=0.005)
        assert ari([0, 0, 0, 1, 1, 1], pred) == pytest.approx(_ari_formula([0, 0, 0, 1, 1, 1], pred), rel=1e-12)


def test_adjustment_for_chance():
    """test_adjustment_for_chance: ARI of uniform random labelings (RandomState(42)), max |ARI| per k to 2 decimals."""
    draw = np.random.RandomState(42).randint
    k_range, worst = [2, 10, 50, 90], []
    for k in k_range:
        scores = []
        for _ in range(10):
            a, b = draw(low=0, high=k, size=100), draw(low=0, high=k, size=100)
            scores.append(ari(a, b))
            assert scores[-1] == pytest.approx(_ari_formula(a, b), rel=1e-9, abs=1e-12)
        worst.append(np.abs(scores).max())
    np.testing.assert_array_almost_equal(worst, [0.02, 0.03, 0.03, 0.02], 2)


def test_exactly_zero_info_score():
    """test_exactly_zero_info_score: one cluster against all singletons has NMI exactly 0 (pytest.approx)."""
    for i in np.logspace(1, 4, 4).astype(int):
        assert nmi(np.ones(i, dtype=int), np.arange(i, dtype=int)) == pytest.approx(0.0)


def test_adjusted_rand_score_overflow():
    """test_adjusted_rand_score_overflow: 100 000 int8 labels, no RuntimeWarning (overflow)."""
    rng = np.random.RandomState(0)
    y_true = rng.randint(0, 2, 100_000, dtype=np.int8)
    y_pred = rng.randint(0, 2, 100_000, dtype=np.int8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        got = ari(y_true, y_pred)
    assert got == pytest.approx(_ari_formula(y_true.astype(np.int64), y_pred.astype(np.int64)), abs=1e-12)


def test_normalized_mutual_info_score_bounded():
    """test_normalized_mutual_info_score_bounded: 0 against a constant labelling, in [0, 1) otherwise."""
    labels1 = [0] * 469
    labels2 = [1] + labels1[1:]
    labels3 = [0, 1] + labels1[2:]
    assert nmi(labels1, labels2) == 0
    assert 0 <= nmi(labels2, labels3) < 1


@pytest.mark.parametrize("seed", range(5))
def test_random_labelings_match_the_formulas(seed):
    rng = np.random.RandomState(seed)
    a, b = rng.randint(0, 7, 300), rng.randint(0, 5, 300)
    assert nmi(a, b) == pytest.approx(_nmi_formula(a, b), rel=1e-10)
    assert ari(a, b) == pytest.approx(_ari_formula(a, b), rel=1e-10)
