"""Clustering metrics: accuracy under the best label matching, NMI and ARI.

Clustering accuracy (Xie et al. 2016, DEC; Ghasedi Dizaji et al. 2017, DEPICT) is

    ACC = max_m (1/N) sum_i 1[y_i = m(c_i)],

the maximum over one-to-one maps m from predicted clusters to true classes,
found by the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``) on
the contingency table. With more predicted clusters than classes the unmatched
clusters count as errors (and likewise unmatched classes).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ari", "clustering_accuracy", "nmi"]


def _labels(labels: Any, argname: str) -> np.ndarray:
    """``labels`` as a 1-D integer numpy array; ValueError naming ``argname`` otherwise."""
    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"`{argname}` must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"`{argname}` is empty")
    if not np.issubdtype(arr.dtype, np.integer):
        # whole floats are accepted; NaN/inf, complex and floats beyond int64 (2^63) are not labels
        whole = (np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr))
                 and np.all(np.abs(arr) < 2.0 ** 63) and np.all(arr == np.round(arr)))
        if not whole:
            raise ValueError(f"`{argname}` must hold integer labels, got dtype {arr.dtype}")
        arr = arr.astype(np.int64)
    return arr


def _pair(labels_true: Any, labels_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t, p = _labels(labels_true, "labels_true"), _labels(labels_pred, "labels_pred")
    if t.shape != p.shape:
        raise ValueError(f"`labels_pred` has {p.size} labels but `labels_true` has {t.size}")
    return t, p


def clustering_accuracy(labels_true: Any, labels_pred: Any) -> float:
    """Fraction of samples correctly labelled under the best one-to-one cluster-to-class map.

    The reference comes first, as in scikit-learn's ``metrics(labels_true, labels_pred)``: the
    one deliberate exception to divmin's model-first order (also :func:`nmi`, :func:`ari` and
    :func:`~divmin.eval.gci_metrics`), kept because every user of these metrics expects it.

    Args:
        labels_true: ``(N,)`` integer class labels (numpy, list or tensor), the reference.
        labels_pred: ``(N,)`` integer cluster ids; any ids, any number of clusters.

    >>> clustering_accuracy([0, 0, 1, 1, 2], [1, 1, 0, 0, 0])
    0.8
    """
    from scipy.optimize import linear_sum_assignment

    t, p = _pair(labels_true, labels_pred)
    _, t_idx = np.unique(t, return_inverse=True)
    _, p_idx = np.unique(p, return_inverse=True)
    table = np.zeros((p_idx.max() + 1, t_idx.max() + 1), dtype=np.int64)
    np.add.at(table, (p_idx, t_idx), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum()) / t.size


def _sklearn_score(score: str, labels_true: Any, labels_pred: Any) -> float:
    """scikit-learn's ``metrics.<score>`` of the checked labels (scikit-learn is imported on first use)."""
    t, p = _pair(labels_true, labels_pred)
    try:
        from sklearn import metrics
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError('nmi and ari need scikit-learn: pip install "divmin[data]"') from err
    return float(getattr(metrics, score)(t, p))


def nmi(labels_true: Any, labels_pred: Any) -> float:
    """Normalized mutual information I(Y; C) / mean(H(Y), H(C)) (arithmetic mean, scikit-learn's default).

    Args:
        labels_true / labels_pred: ``(N,)`` integer labels, the reference first (see
            :func:`clustering_accuracy`); NMI is symmetric, so the order does not change it.

    >>> round(nmi([0, 0, 1, 1], [1, 1, 0, 0]), 6)
    1.0
    """
    return _sklearn_score("normalized_mutual_info_score", labels_true, labels_pred)


def ari(labels_true: Any, labels_pred: Any) -> float:
    """Adjusted Rand index (Hubert & Arabie 1985): 1 for identical partitions, about 0 for random ones.

    Symmetric in its two arguments; ``labels_true`` (the reference) first, as in scikit-learn.

    >>> round(ari([0, 0, 1, 1], [1, 1, 0, 0]), 6)
    1.0
    """
    return _sklearn_score("adjusted_rand_score", labels_true, labels_pred)
