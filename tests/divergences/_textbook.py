"""Independent float64 oracles: each divergence written from its textbook definition.

These never call divmin. Every registry name must appear here, so adding a
member to the registry forces adding an oracle (see test_every_member_has_an_oracle).
Arrays are probability vectors over the last axis; zeros are handled by scipy's
rel_entr / xlogy and explicit limits.
"""

from __future__ import annotations

import numpy as np
from scipy.special import rel_entr


def _kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return rel_entr(p, q).sum(-1)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = num / den
    return np.where(num == 0, 0.0, out)


def _alpha(p: np.ndarray, q: np.ndarray, a: float) -> np.ndarray:
    if a == 0.0:
        return _kl(q, p)
    if a == 1.0:
        return _kl(p, q)
    with np.errstate(divide="ignore", invalid="ignore"):
        cross = np.where((p == 0) & (q == 0), 0.0, np.power(p, a) * np.power(q, 1.0 - a))
    return (cross.sum(-1) - 1.0) / (a * (a - 1.0))


def _gjs(p: np.ndarray, q: np.ndarray, beta: float) -> np.ndarray:
    m = beta * p + (1.0 - beta) * q
    return beta * _kl(p, m) + (1.0 - beta) * _kl(q, m)


TEXTBOOK = {
    "forward_kl": lambda p, q: _kl(p, q),
    "reverse_kl": lambda p, q: _kl(q, p),
    "js": lambda p, q: _kl(p, (p + q) / 2) + _kl(q, (p + q) / 2),
    "generalized_js": lambda p, q, beta=0.5: _gjs(p, q, beta),
    "total_variation": lambda p, q: 0.5 * np.abs(p - q).sum(-1),
    "squared_hellinger": lambda p, q: ((np.sqrt(p) - np.sqrt(q)) ** 2).sum(-1),
    "pearson_chi2": lambda p, q: _safe_div((p - q) ** 2, q).sum(-1),
    "neyman_chi2": lambda p, q: _safe_div((p - q) ** 2, p).sum(-1),
    "jeffreys": lambda p, q: _kl(p, q) + _kl(q, p),
    "alpha": lambda p, q, alpha=0.5: _alpha(p, q, alpha),
    "softened_reverse_kl": lambda p, q: 2.0 * _kl((p + q) / 2, p),
    "softened_forward_kl": lambda p, q: 2.0 * _kl((p + q) / 2, q),
    "skew_forward_kl": lambda p, q, skew=0.1: _kl(p, skew * p + (1 - skew) * q),
    "skew_reverse_kl": lambda p, q, skew=0.1: _kl(q, (1 - skew) * p + skew * q),
}


def textbook(div, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """D(P || Q) for the registry member ``div`` (its params passed through)."""
    return TEXTBOOK[div.name](p, q, **div.params)
