"""Class-conditional generation from a classifier by SGLD on E(x, y) = -f(x)[y].

Stochastic gradient Langevin dynamics (Welling & Teh 2011), with JEM's decoupled
step and noise (Grathwohl et al. 2020):

    x_{k+1} = Proj_[lo, hi]( x_k - alpha · ∇_x E(x_k, y) + sigma · N(0, I) ),

started, as in Mirza et al. 2024, from class-wise Gaussians fitted to the data:
``class_gaussian_init`` (mean and shrunk covariance of each class) or
``class_pca_init`` (the paper's PCA initialisation: only the leading principal
components of each class). alpha = sigma^2 / 2 is proper Langevin
dynamics targeting p(x | y) ∝ exp(-E(x, y)); larger alpha, as in JEM, samples a
colder distribution.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..engine import Number
from ..registry import Registry
from ._attacks import _rand, check_bounds
from ._energy import _num_classes, check_labels, joint_energy

__all__ = ["SGLD_INITS", "class_gaussian_init", "class_pca_init", "sgld_sample"]


def _class_draws(x: Tensor, labels: Tensor, sample_labels: Tensor, draw: Callable[[Tensor, Tensor], Tensor],
                 bounds: tuple[float, float] | None, generator: torch.Generator | None) -> Tensor:
    """``draw(rows (n, D) of one class, z (m, D) standard normals) -> (m, D)`` per class of ``sample_labels``."""
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
        raise TypeError(f"`x` must be a floating torch.Tensor (N, ...), got {getattr(x, 'dtype', type(x).__name__)} "
                        f"of shape {tuple(getattr(x, 'shape', ()))}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("`x` must be finite (a class's mean and covariance are undefined otherwise)")
    check_bounds(bounds)
    check_labels(labels, int(labels.max()) + 1 if isinstance(labels, Tensor) and labels.numel() else 1, x.shape[:1])
    if (not isinstance(sample_labels, Tensor) or sample_labels.dim() != 1 or sample_labels.is_floating_point()
            or sample_labels.is_complex() or sample_labels.dtype == torch.bool):
        raise TypeError("`sample_labels` must be a (M,) integer tensor")
    flat, out = x.flatten(1).double(), torch.empty(sample_labels.shape[0], x[0].numel(), dtype=torch.float64)
    for c in sample_labels.unique().tolist():
        rows = flat[labels == c].cpu()
        if rows.shape[0] == 0:
            raise ValueError(f"`sample_labels` holds class {c}, which has no example in `labels`")
        pick = (sample_labels == c).nonzero().squeeze(1).cpu()
        z = _rand((pick.numel(), flat.shape[1]), generator, normal=True).cpu().double()
        out[pick] = draw(rows, z)
    out = out.to(x).view(-1, *x.shape[1:])
    return out if bounds is None else out.clamp(*bounds)


def _sqrt_factor(cov: Tensor, eye: Tensor) -> Tensor:
    """L with L L^T = cov (+ jitter): Cholesky, or for a covariance that is singular at its own scale
    (a jitter of 1e-8 is nothing next to entries of 1e30) the symmetric square root from eigh."""
    factor, info = torch.linalg.cholesky_ex(cov + 1e-8 * eye)
    if int(info) == 0:
        return factor
    values, vectors = torch.linalg.eigh(cov)
    return vectors * values.clamp_min(0).sqrt()


def class_gaussian_init(x: Tensor, labels: Tensor, sample_labels: Tensor, *, shrinkage: float = 0.1,
                        bounds: tuple[float, float] | None = (0.0, 1.0),
                        generator: torch.Generator | None = None) -> Tensor:
    """Draws from N(mu_y, Sigma_y) fitted per class of ``(x, labels)``, one per entry of ``sample_labels``.

    Sigma_y = (1 - shrinkage) · S_y + shrinkage · (tr S_y / D) · I, S_y the class's sample covariance
    of the flattened inputs (D features).

    Args:
        x: ``(N, ...)`` data; labels: ``(N,)`` classes. sample_labels: ``(M,)`` classes to draw;
            each must occur in ``labels``.
        shrinkage: in [0, 1]. bounds: clamp range (None: none). generator: the draws' source.

    Returns:
        ``(M, ...)`` starting points.

    >>> x = torch.tensor([[0.1, 0.2], [0.3, 0.2], [0.8, 0.9], [0.9, 0.7]]); y = torch.tensor([0, 0, 1, 1])
    >>> class_gaussian_init(x, y, torch.tensor([1, 0, 1]), generator=torch.Generator().manual_seed(0)).shape
    torch.Size([3, 2])
    """
    Number(ge=0, le=1)("shrinkage", shrinkage)

    def draw(rows: Tensor, z: Tensor) -> Tensor:
        centred, d = rows - rows.mean(0), rows.shape[1]
        cov = centred.T @ centred / max(rows.shape[0] - 1, 1)
        eye = torch.eye(d, dtype=torch.float64)
        cov = (1 - shrinkage) * cov + shrinkage * (cov.trace() / d).clamp_min(1e-8) * eye
        return rows.mean(0) + z @ _sqrt_factor(cov, eye).T

    return _class_draws(x, labels, sample_labels, draw, bounds, generator)


def class_pca_init(x: Tensor, labels: Tensor, sample_labels: Tensor, *, components: int = 16,
                   bounds: tuple[float, float] | None = (0.0, 1.0),
                   generator: torch.Generator | None = None) -> Tensor:
    """Draws from each class's Gaussian restricted to its ``components`` leading principal directions.

    With the class's centred data X_y = U S V^T (n_y rows), the draw is

        x0 = mu_y + sum_{k < K} z_k · (S_k / sqrt(n_y - 1)) · V_k,   z ~ N(0, I_K),

    the PCA initialisation of Mirza et al. 2024 (after Zhu et al. 2021): the class's
    dominant modes of variation without its small-variance noise directions.

    Args:
        x, labels, sample_labels, bounds, generator: as :func:`class_gaussian_init`.
        components: K >= 1 (capped at the class's rank).

    Returns:
        ``(M, ...)`` starting points.

    >>> x = torch.tensor([[0.1, 0.2], [0.3, 0.2], [0.8, 0.9], [0.9, 0.7]]); y = torch.tensor([0, 0, 1, 1])
    >>> class_pca_init(x, y, torch.tensor([1, 0]), components=1, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([2, 2])
    """
    if isinstance(components, bool) or not isinstance(components, int) or components < 1:
        raise ValueError(f"`components` must be an int >= 1, got {components!r}")

    def draw(rows: Tensor, z: Tensor) -> Tensor:
        _, sv, vh = torch.linalg.svd(rows - rows.mean(0), full_matrices=False)
        k = min(components, sv.shape[0])
        return rows.mean(0) + (z[:, :k] * sv[:k] / max(rows.shape[0] - 1, 1) ** 0.5) @ vh[:k]

    return _class_draws(x, labels, sample_labels, draw, bounds, generator)


# SGLD starting distributions by name: fn(x, labels, sample_labels, *, bounds, generator) -> (M, ...)
SGLD_INITS: Registry[Callable[..., Tensor]] = Registry("SGLD init")
SGLD_INITS.add("gaussian", class_gaussian_init)
SGLD_INITS.add("pca", class_pca_init)


def sgld_sample(model: nn.Module, x0: Tensor, labels: Tensor, *, step_size: float = 1.0, noise: float = 0.01,
                steps: int = 20, bounds: tuple[float, float] | None = (0.0, 1.0),
                generator: torch.Generator | None = None) -> Tensor:
    """Run ``steps`` SGLD steps on E(x, y) from ``x0`` (model mode and parameters untouched).

    Args:
        model: ``(B, ...) -> (B, C)`` logits. x0: ``(B, ...)`` starts; labels: ``(B,)`` classes.
        step_size: alpha >= 0 (JEM: 1). noise: sigma >= 0 (JEM: 0.01). steps: >= 1.
        bounds: the input range, or None. generator: the noise's source.

    Returns:
        ``(B, ...)`` samples, detached.

    >>> net = nn.Linear(2, 2); _ = net.requires_grad_(False)
    >>> x = sgld_sample(net, torch.full((3, 2), 0.5), torch.tensor([0, 1, 0]), steps=2,
    ...                 generator=torch.Generator().manual_seed(0))
    >>> x.shape, bool(x.min() >= 0 and x.max() <= 1)
    (torch.Size([3, 2]), True)
    """
    if not isinstance(x0, Tensor) or not x0.is_floating_point() or x0.dim() < 1:
        raise TypeError(f"`x0` must be a floating torch.Tensor (B, ...), got {getattr(x0, 'dtype', type(x0).__name__)}")
    check_bounds(bounds)
    for name, v in (("step_size", step_size), ("noise", noise)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"`{name}` must be a finite number >= 0, got {v!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"`steps` must be an int >= 1, got {steps!r}")
    check_labels(labels, _num_classes(model, x0), x0.shape[:1])
    x = x0.detach()
    for _ in range(steps):
        x.requires_grad_(True)
        with torch.enable_grad():
            grad, = torch.autograd.grad(joint_energy(model(x), labels).sum(), x)
        x = x.detach() - step_size * grad + noise * _rand(tuple(x.shape), generator, normal=True).to(x)
        x = x if bounds is None else x.clamp(*bounds)
    return x.detach()
