"""Sample-based metrics for generators: modes, precision/recall, sliced Wasserstein, Fréchet distance.

All take samples as (N, D) tensors (flatten images first) and compute in float64
where the result is a small statistic. References: Kynkäänniemi et al. 2019
(k-NN precision and recall), Bonneel et al. 2015 (sliced Wasserstein), Heusel
et al. 2017 (Fréchet distance, FID), Srivastava et al. 2017 (VEEGAN: modes
covered, "high-quality" samples).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ..divergences import check_real

__all__ = [
    "ModeStats",
    "PrecisionRecall",
    "class_coverage",
    "frechet_distance",
    "gaussian_frechet_distance",
    "mode_stats",
    "precision_recall",
    "sliced_wasserstein",
]


class ModeStats(NamedTuple):
    """Samples assigned to the modes of a known mixture (or to classes)."""

    covered: int  # modes whose sample share is >= coverage x their true weight
    tv: float  # total variation between the assigned samples' mode shares and the true weights
    quality: float  # fraction of samples within k_std of some mode (1 for class labels)
    shares: Tensor  # (K,) empirical share of each mode among the assigned samples


class PrecisionRecall(NamedTuple):
    precision: float  # fraction of generated samples inside the real k-NN manifold
    recall: float  # fraction of real samples inside the generated k-NN manifold


def _check_2d(name: str, x: Tensor) -> Tensor:
    """(N, D) real samples, N >= 1, D >= 1, finite (a NaN sample has no distance to anything)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor of shape (N, D), got {type(x).__name__}")
    if x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"`{name}` must hold real numbers, got dtype {x.dtype}")
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"`{name}` must be a tensor of shape (N, D) with N >= 1, D >= 1, got {tuple(x.shape)}")
    if not bool(x.isfinite().all()):
        raise ValueError(f"`{name}` must be finite (NaN or inf samples have no distances)")
    return x


def _check_vector(name: str, x: object, n: int, *, positive: bool) -> Tensor:
    """(n,) finite reals (> 0 with ``positive``) as float64; a number is broadcast."""
    if isinstance(x, bool) or not isinstance(x, (Tensor, int, float)):
        raise TypeError(f"`{name}` must be a tensor or a number, got {type(x).__name__}")
    x = torch.as_tensor(x, dtype=torch.float64)
    if x.ndim == 0:
        x = x.expand(n)
    if tuple(x.shape) != (n,) or not bool(x.isfinite().all()) or (positive and not bool((x > 0).all())):
        raise ValueError(f"`{name}` must be {'positive ' if positive else ''}finite with shape ({n},), "
                         f"got {x.tolist() if x.numel() <= 8 else tuple(x.shape)}")
    return x


def _check_chunk(chunk: object) -> int:
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"`chunk` must be an int >= 1, got {chunk!r}")
    return chunk


def _shares_summary(counts: Tensor, weights: Tensor, coverage: float, quality: float) -> ModeStats:
    weights = weights.double() / weights.double().sum()
    total = counts.sum()
    shares = counts.double() / total if total > 0 else torch.zeros_like(weights)
    covered = int((shares >= coverage * weights).sum()) if total > 0 else 0
    return ModeStats(covered, float(0.5 * (shares - weights).abs().sum()), quality, shares)


def mode_stats(samples: Tensor, means: Tensor, weights: Tensor, stds: Tensor | float, *,
               k_std: float = 3.0, coverage: float = 0.25) -> ModeStats:
    """Assign each sample to its nearest mode in std units; count, weigh and cover the modes.

    A sample x belongs to mode k = argmin_j ||x - m_j|| / s_j when that distance is
    <= ``k_std``; others are off-mode (they lower ``quality``). A mode is covered when its
    share of the assigned samples is at least ``coverage`` times its true weight w_k, so
    light modes are judged relative to their weight. TV = sum_k |share_k - w_k| / 2.

    Args: samples (N, D); means (K, D); weights (K,) positive; stds (K,) or a float.
    """
    x, means = _check_2d("samples", samples).double(), _check_2d("means", means).double()
    if means.shape[1] != x.shape[1]:
        raise ValueError(f"`means` must have D = {x.shape[1]} columns, got {means.shape[1]}")
    if isinstance(weights, (int, float)):
        raise TypeError(f"`weights` must be a ({means.shape[0]},) tensor, got {type(weights).__name__}")
    weights = _check_vector("weights", weights, means.shape[0], positive=True)
    stds = _check_vector("stds", stds, means.shape[0], positive=True)
    check_real("k_std", k_std, gt=0.0)
    if not 0 < check_real("coverage", coverage) <= 1:
        raise ValueError(f"`coverage` must be in (0, 1], got {coverage!r}")
    dist = torch.cdist(x, means) / stds  # (N, K)
    best, idx = dist.min(1)
    ok = best <= k_std
    counts = torch.bincount(idx[ok], minlength=means.shape[0])
    return _shares_summary(counts, weights, coverage, float(ok.double().mean()))


def class_coverage(labels: Tensor, num_classes: int, *, weights: Tensor | None = None,
                   coverage: float = 0.25) -> ModeStats:
    """Classes as modes: ``labels`` (N,) ints predicted for generated samples; weights default uniform."""
    if not isinstance(labels, Tensor) or labels.dtype.is_floating_point or labels.is_complex():
        raise TypeError(f"`labels` must be an integer tensor of class indices, got "
                        f"{getattr(labels, 'dtype', type(labels).__name__)}")
    if labels.ndim != 1:
        raise ValueError(f"`labels` must be a 1-D tensor of class indices, got shape {tuple(labels.shape)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"`num_classes` must be an int >= 1, got {num_classes!r}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"`labels` must lie in [0, {num_classes})")
    if not 0 < check_real("coverage", coverage) <= 1:
        raise ValueError(f"`coverage` must be in (0, 1], got {coverage!r}")
    w = torch.ones(num_classes) if weights is None else _check_vector("weights", weights, num_classes, positive=True)
    counts = torch.bincount(labels.long().cpu(), minlength=num_classes)
    return _shares_summary(counts, w, coverage, 1.0)


def _kth_nn_radius(x: Tensor, k: int, chunk: int) -> Tensor:
    """(N,) distance from each row of x to its k-th nearest other row."""
    out = []
    for lo in range(0, x.shape[0], chunk):
        d = torch.cdist(x[lo:lo + chunk], x)
        out.append(d.topk(k + 1, dim=1, largest=False).values[:, k])  # column 0 is the point itself
    return torch.cat(out)


def _inside(points: Tensor, centres: Tensor, radii: Tensor, chunk: int) -> Tensor:
    """(N,) whether each point lies in some ball B(centres_j, radii_j)."""
    return torch.cat([(torch.cdist(points[lo:lo + chunk], centres) <= radii[None]).any(1)
                      for lo in range(0, points.shape[0], chunk)])


def precision_recall(fake: Tensor, real: Tensor, *, k: int = 3, chunk: int = 1024) -> PrecisionRecall:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN balls; model samples first.

    The real manifold is the union of balls around each real sample with radius its
    distance to its k-th nearest real neighbour; precision is the fraction of fake
    samples inside it; recall swaps the roles. real (N, D), fake (M, D), N, M > k.
    """
    real, fake = _check_2d("real", real).double(), _check_2d("fake", fake).double()
    if real.shape[1] != fake.shape[1]:
        raise ValueError("`real` and `fake` must have the same number of columns")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < min(real.shape[0], fake.shape[0]):
        raise ValueError(f"`k` must be an int in [1, min(N, M)), got {k!r}")
    chunk = _check_chunk(chunk)
    r_real, r_fake = _kth_nn_radius(real, k, chunk), _kth_nn_radius(fake, k, chunk)
    precision = _inside(fake, real, r_real, chunk).double().mean()
    recall = _inside(real, fake, r_fake, chunk).double().mean()
    return PrecisionRecall(float(precision), float(recall))


def _wasserstein_1d_pp(a: Tensor, b: Tensor, p: float) -> Tensor:
    """W_p^p between uniform empirical measures on sorted rows a (P, n), b (P, m), exactly.

    Both quantile functions are step functions; between consecutive breakpoints of
    {i/n} and {j/m} they are constant, so the integral int_0^1 |F_a^-1 - F_b^-1|^p is a sum.
    """
    n, m = a.shape[-1], b.shape[-1]
    if n == m:
        return (a - b).abs().pow(p).mean(-1)
    # unique breakpoints: a zero-width piece would add 0 * |diff|^p, NaN where the difference overflows
    u = torch.unique(torch.cat([torch.arange(1, n + 1, dtype=torch.float64) / n,
                                torch.arange(1, m + 1, dtype=torch.float64) / m]))
    widths = torch.diff(u, prepend=u.new_zeros(1))
    mid = (u - widths / 2).to(a.device)
    ia = (mid * n).ceil().long().clamp(1, n) - 1
    ib = (mid * m).ceil().long().clamp(1, m) - 1
    return ((a[:, ia] - b[:, ib]).abs().pow(p) * widths.to(a.device, a.dtype)).sum(-1)


def sliced_wasserstein(x: Tensor, y: Tensor, *, num_projections: int = 128, p: float = 2.0,
                       projections: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
    """Sliced Wasserstein distance (E_theta W_p^p(theta.x, theta.y))^(1/p) over random unit directions.

    Args:
        x: (N, D), y: (M, D) samples with uniform weights (N != M allowed; exact 1-D transport).
        num_projections: directions drawn uniformly on the sphere (ignored with ``projections``).
        p: order >= 1.
        projections: optional (P, D) unit directions (POT passes the transpose, (D, P)).
        generator: for the random directions.
    Returns: a 0-d tensor (differentiable in x and y).
    """
    x, y = _check_2d("x", x), _check_2d("y", y)
    if x.shape[1] != y.shape[1]:
        raise ValueError("`x` and `y` must have the same number of columns")
    p = check_real("p", p, ge=1.0)
    if projections is None:
        if isinstance(num_projections, bool) or not isinstance(num_projections, int) or num_projections < 1:
            raise ValueError(f"`num_projections` must be an int >= 1, got {num_projections!r}")
        theta = torch.randn(num_projections, x.shape[1], generator=generator, device=x.device)
        projections = theta / theta.norm(dim=1, keepdim=True)
    else:
        projections = _check_2d("projections", projections)
        if projections.shape[1] != x.shape[1]:
            raise ValueError(f"`projections` must have shape (P, {x.shape[1]}), got {tuple(projections.shape)}")
    proj = projections.to(x.device, torch.promote_types(torch.promote_types(x.dtype, y.dtype), torch.float32))
    a = (x.to(proj.dtype) @ proj.T).T.sort(-1).values
    b = (y.to(proj.dtype) @ proj.T).T.sort(-1).values
    return _wasserstein_1d_pp(a, b, p).mean().pow(1.0 / p)


def _sqrtm_psd(c: Tensor) -> Tensor:
    vals, vecs = torch.linalg.eigh(c)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def gaussian_frechet_distance(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> float:
    """||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2), the 2-Wasserstein^2 between Gaussians."""
    named = {"mu1": mu1, "cov1": cov1, "mu2": mu2, "cov2": cov2}
    for name, t in named.items():
        if not isinstance(t, Tensor) or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"`{name}` must be a real torch.Tensor, got {getattr(t, 'dtype', type(t).__name__)}")
        if not bool(t.isfinite().all()):
            raise ValueError(f"`{name}` must be finite")
    mu1, mu2, cov1, cov2 = (t.detach().double() for t in (mu1, mu2, cov1, cov2))
    if cov1.ndim != 2 or cov1.shape != cov2.shape or cov1.shape[0] != mu1.shape[-1] or mu1.shape != mu2.shape \
            or mu1.ndim != 1 or cov1.shape[0] != cov1.shape[1] or mu1.numel() == 0:
        raise ValueError("`mu1`, `mu2` must be (F,) and `cov1`, `cov2` (F, F), F >= 1, got "
                         f"{tuple(mu1.shape)}, {tuple(mu2.shape)}, {tuple(cov1.shape)}, {tuple(cov2.shape)}")
    s1 = _sqrtm_psd(cov1)
    middle = s1 @ cov2 @ s1
    cross = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    return float((mu1 - mu2).square().sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * cross)


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to features a (N, F) and b (M, F) (FID with your features)."""
    a, b = _check_2d("a", a).double(), _check_2d("b", b).double()
    if a.shape[1] != b.shape[1] or min(a.shape[0], b.shape[0]) < 2:
        raise ValueError("`a` and `b` need the same number of columns and >= 2 rows")
    return gaussian_frechet_distance(a.mean(0), torch.cov(a.T).reshape(a.shape[1], -1),
                                     b.mean(0), torch.cov(b.T).reshape(b.shape[1], -1))
