"""Calibration of predicted probabilities: binned expected calibration error (ECE)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["calibration_error", "top_label_calibration_error"]


def _real(name: str, x: object) -> Tensor:
    """A tensor of reals (float, int or bool), flattened, detached, float64."""
    if not isinstance(x, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(x).__name__}")
    if x.is_complex():
        raise TypeError(f"`{name}` must hold real numbers, got dtype {x.dtype}")
    return x.detach().double().flatten()


def _unit(name: str, x: object) -> Tensor:
    """Probabilities: reals in [0, 1] (no NaN)."""
    x = _real(name, x)
    if bool(((x < 0) | (x > 1) | x.isnan()).any()):
        raise ValueError(f"`{name}` must hold probabilities in [0, 1], got values outside (e.g. "
                         f"{float(x[(x < 0) | (x > 1) | x.isnan()][0])})")
    return x


def calibration_error(pred: Tensor, outcome: Tensor, *, weight: Tensor | None = None, n_bins: int = 10) -> Tensor:
    """Binned ECE of probabilities ``pred`` against ``outcome`` (0/1 labels or true probabilities).

    ``ECE = sum_b W_b |mean_b(pred) - mean_b(outcome)|`` over ``n_bins`` equal-width
    bins of ``pred`` on [0, 1], with W_b the bin's share of ``weight`` (uniform by
    default) and weighted means. With true probabilities as outcomes this is the
    population ECE, free of label noise. Shapes: any, flattened; returns a float64 scalar.
    ``pred`` and ``outcome`` must lie in [0, 1]; ``weight`` must be finite, >= 0 and not all 0.

    >>> round(calibration_error(torch.tensor([0.9, 0.1]), torch.tensor([1.0, 1.0])).item(), 3)
    0.5
    """
    pred, outcome = _unit("pred", pred), _unit("outcome", outcome)
    w = torch.ones_like(pred) if weight is None else _real("weight", weight)
    if not (pred.shape == outcome.shape == w.shape) or pred.numel() == 0:
        raise ValueError(f"`pred`, `outcome` and `weight` must be non-empty with equal sizes, "
                         f"got {pred.numel()}, {outcome.numel()}, {w.numel()}")
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"`n_bins` must be an int >= 1, got {n_bins!r}")
    if bool((w < 0).any()) or not bool(w.isfinite().all()) or not float(w.sum()) > 0:
        raise ValueError("`weight` must be finite and >= 0 with a positive sum (the bins' shares are its shares)")
    w = w / w.sum()
    idx = (pred * n_bins).floor().clamp(0, n_bins - 1).long()
    gap = torch.zeros(n_bins, dtype=torch.float64, device=pred.device).index_add_(0, idx, w * (pred - outcome))
    return gap.abs().sum()


def top_label_calibration_error(probs: Tensor, labels: Tensor, *, n_bins: int = 10) -> Tensor:
    """Top-label ECE of binary probabilities (Guo et al., 2017): confidence ``max(p, 1 - p)``
    of the prediction ``p >= 0.5`` against whether it was right; probs, labels (N,) -> scalar."""
    probs, labels = _unit("probs", probs), _unit("labels", labels)
    if bool(((labels != 0) & (labels != 1)).any()):
        raise ValueError("`labels` must be 0 or 1 (whether the positive class is right)")
    if probs.shape != labels.shape or probs.numel() == 0:
        raise ValueError(f"`probs` and `labels` must be non-empty with equal sizes, got {probs.numel()}, "
                         f"{labels.numel()}")
    conf = torch.where(probs >= 0.5, probs, 1 - probs)
    correct = ((probs >= 0.5).double() == labels).double()
    return calibration_error(conf, correct, n_bins=n_bins)
