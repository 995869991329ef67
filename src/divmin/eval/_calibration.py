"""Calibration of predicted probabilities: binned expected calibration error (ECE)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["calibration_error", "top_label_calibration_error"]


def calibration_error(pred: Tensor, outcome: Tensor, *, weight: Tensor | None = None, n_bins: int = 10) -> Tensor:
    """Binned ECE of probabilities ``pred`` against ``outcome`` (0/1 labels or true probabilities).

    ``ECE = sum_b W_b |mean_b(pred) - mean_b(outcome)|`` over ``n_bins`` equal-width
    bins of ``pred`` on [0, 1], with W_b the bin's share of ``weight`` (uniform by
    default) and weighted means. With true probabilities as outcomes this is the
    population ECE, free of label noise. Shapes: any, flattened; returns a float64 scalar.

    >>> round(calibration_error(torch.tensor([0.9, 0.1]), torch.tensor([1.0, 1.0])).item(), 3)
    0.5
    """
    pred, outcome = pred.detach().double().flatten(), outcome.detach().double().flatten()
    w = torch.ones_like(pred) if weight is None else weight.detach().double().flatten()
    if not (pred.shape == outcome.shape == w.shape) or pred.numel() == 0:
        raise ValueError(f"`pred`, `outcome` and `weight` must be non-empty with equal sizes, "
                         f"got {pred.numel()}, {outcome.numel()}, {w.numel()}")
    if not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"`n_bins` must be an int >= 1, got {n_bins!r}")
    w = w / w.sum()
    idx = (pred * n_bins).floor().clamp(0, n_bins - 1).long()
    gap = torch.zeros(n_bins, dtype=torch.float64, device=pred.device).index_add_(0, idx, w * (pred - outcome))
    return gap.abs().sum()


def top_label_calibration_error(probs: Tensor, labels: Tensor, *, n_bins: int = 10) -> Tensor:
    """Top-label ECE of binary probabilities (Guo et al., 2017): confidence ``max(p, 1 - p)``
    of the prediction ``p >= 0.5`` against whether it was right; probs, labels (N,) -> scalar."""
    probs, labels = probs.detach().double().flatten(), labels.detach().double().flatten()
    if probs.shape != labels.shape:
        raise ValueError(f"`probs` and `labels` must have equal sizes, got {probs.numel()}, {labels.numel()}")
    conf = torch.where(probs >= 0.5, probs, 1 - probs)
    correct = ((probs >= 0.5).double() == labels).double()
    return calibration_error(conf, correct, n_bins=n_bins)
