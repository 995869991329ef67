"""Clustering metrics against brute force (accuracy) and scikit-learn (NMI, ARI)."""

import itertools

import numpy as np
import pytest
import torch

from divmin.eval import ari, clustering_accuracy, nmi

sk_metrics = pytest.importorskip("sklearn.metrics")


def brute_force_accuracy(t: np.ndarray, p: np.ndarray) -> float:
    """Best one-to-one map from clusters to classes by trying every injection (small cases)."""
    classes, clusters = np.unique(t), np.unique(p)
    best = 0
    if len(clusters) <= len(classes):
        maps = (dict(zip(clusters, perm)) for perm in itertools.permutations(classes, len(clusters)))
    else:  # every injection of the classes into the clusters
        maps = ({c: k for c, k in zip(perm, classes)} for perm in itertools.permutations(clusters, len(classes)))
    for m in maps:
        best = max(best, sum(int(m.get(c, None) == y) for y, c in zip(t, p)))
    return best / len(t)


@pytest.mark.parametrize("n_true,n_pred", [(3, 3), (2, 4), (4, 2), (4, 5)])
def test_accuracy_matches_brute_force(n_true, n_pred):
    rng = np.random.default_rng(n_true * 10 + n_pred)
    for _ in range(20):
        t = rng.integers(0, n_true, size=12)
        p = rng.integers(0, n_pred, size=12) + 7  # arbitrary cluster ids
        assert clustering_accuracy(t, p) == pytest.approx(brute_force_accuracy(t, p))


def test_accuracy_is_one_under_relabelling_and_accepts_tensors():
    t = torch.tensor([0, 1, 2, 2, 1, 0])
    assert clustering_accuracy(t, (t + 1) % 3) == 1.0
    assert clustering_accuracy(t, torch.zeros(6, dtype=torch.long)) == pytest.approx(2 / 6)


def test_nmi_ari_match_sklearn():
    rng = np.random.default_rng(0)
    for _ in range(5):
        t, p = rng.integers(0, 4, 50), rng.integers(0, 6, 50)
        assert nmi(t, p) == pytest.approx(sk_metrics.normalized_mutual_info_score(t, p))
        assert ari(t, p) == pytest.approx(sk_metrics.adjusted_rand_score(t, p))


@pytest.mark.parametrize("fn", [clustering_accuracy, nmi, ari])
def test_bad_input_names_the_argument(fn):
    with pytest.raises(ValueError, match="labels_pred"):
        fn([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="labels_true"):
        fn([], [])
    with pytest.raises(ValueError, match="labels_pred"):
        fn([0, 1], [[0, 1]])
    with pytest.raises(ValueError, match="labels_true"):
        fn([0.5, 1.0], [0, 1])
