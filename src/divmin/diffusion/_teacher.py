"""Diffusion teachers: the noise schedule, the teacher protocol, an exact Gaussian-mixture teacher.

Noise schedule (variance exploding, EDM's parameterisation, Karras et al. 2022)::

    x_t = x_0 + sigma * eps,   eps ~ N(0, I),   sigma in [sigma_min, sigma_max]

so the noised density is p_sigma = p_0 * N(0, sigma^2 I). A teacher gives, at a
batch of noised points ``x_t`` (B, *shape) and noise levels ``sigma`` (a float or
a (B,) tensor), the score ``grad_x log p_sigma(x_t)`` and/or the denoiser
``D(x_t, sigma) = E[x_0 | x_t]``; the two are tied by Tweedie's formula

    D(x, sigma) = x + sigma^2 * score(x, sigma).
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

__all__ = ["DiffusionTeacher", "GaussianMixtureTeacher", "expand_sigma", "score_from_denoiser"]


@runtime_checkable
class DiffusionTeacher(Protocol):
    """Anything with ``score(x_t, sigma)`` under the VE schedule above; shapes as in the module doc."""

    def score(self, x_t: Tensor, sigma: Tensor | float) -> Tensor: ...


def expand_sigma(sigma: Tensor | float, x: Tensor, *, allow_zero: bool = False) -> Tensor:
    """``sigma`` (float, 0-d or (B,)) as a tensor broadcastable against ``x`` (B, *shape)."""
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim < 1:
        raise TypeError(f"`x` must be a floating tensor (B, *shape), got {getattr(x, 'dtype', type(x).__name__)}")
    if isinstance(sigma, bool) or not isinstance(sigma, (Tensor, int, float)) \
            or (isinstance(sigma, Tensor) and (sigma.is_complex() or sigma.dtype == torch.bool)):
        raise TypeError(f"`sigma` must be a real number or tensor, got {type(sigma).__name__}")
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if s.ndim == 0:
        s = s.expand(x.shape[0])
    if s.ndim != 1 or s.shape[0] != x.shape[0]:
        raise ValueError(f"`sigma` must be a scalar or have shape ({x.shape[0]},), got {tuple(s.shape)}")
    if not bool(((s >= 0).all() if allow_zero else (s > 0).all()) and s.isfinite().all()):
        raise ValueError("`sigma` must be finite and " + (">= 0" if allow_zero else "> 0"))
    return s.reshape(-1, *([1] * (x.ndim - 1)))


def score_from_denoiser(denoised: Tensor, x_t: Tensor, sigma: Tensor | float) -> Tensor:
    """Tweedie: ``score = (D(x_t, sigma) - x_t) / sigma^2``."""
    s = expand_sigma(sigma, x_t)
    if not isinstance(denoised, Tensor) or denoised.shape != x_t.shape:
        raise ValueError(f"`denoised` must have the shape of `x_t` {tuple(x_t.shape)}, "
                         f"got {tuple(getattr(denoised, 'shape', ())) or type(denoised).__name__}")
    return (denoised - x_t) / s.square()


class GaussianMixtureTeacher(nn.Module):
    """An exact teacher: p_0 = sum_k w_k N(m_k, diag(s_k^2)) in any dimension D.

    Noising keeps it a mixture: p_sigma = sum_k w_k N(m_k, diag(s_k^2 + sigma^2)),
    so the score, the denoiser, the log-density and samples at every sigma are
    exact (no training). With responsibilities gamma_k(x) of the noised mixture,

        score(x, sigma) = sum_k gamma_k(x) (m_k - x) / (s_k^2 + sigma^2).

    Args:
        means: (K, D) component means.
        stds: (K,) isotropic or (K, D) diagonal component standard deviations (> 0).
        weights: (K,) positive mixture weights (normalised here); default uniform.
    """

    def __init__(self, means: Tensor, stds: Tensor | float, weights: Tensor | None = None) -> None:
        super().__init__()
        means = torch.as_tensor(means, dtype=torch.float32)
        if means.ndim != 2 or 0 in means.shape or not bool(means.isfinite().all()):
            raise ValueError(f"`means` must be finite with shape (K, D), K, D >= 1, got {tuple(means.shape)}")
        k, d = means.shape
        stds = torch.as_tensor(stds, dtype=means.dtype)
        if stds.ndim == 0 or (stds.ndim == 1 and stds.shape[0] == k):
            stds = stds.reshape(-1, 1).expand(k, d)
        if stds.shape != (k, d) or not bool((stds > 0).all() and stds.isfinite().all()):
            raise ValueError(f"`stds` must be positive with shape (K,) or (K, D) = ({k}, {d})")
        weights = torch.ones(k) if weights is None else torch.as_tensor(weights, dtype=means.dtype)
        if weights.shape != (k,) or not bool((weights > 0).all() and weights.isfinite().all()):
            raise ValueError(f"`weights` must be positive with shape ({k},)")
        self.register_buffer("means", means.clone())
        self.register_buffer("stds", stds.clone())
        self.register_buffer("log_weights", torch.log(weights / weights.sum()))

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def weights(self) -> Tensor:
        return self.log_weights.exp()

    def _parts(self, x: Tensor, sigma: Tensor | float) -> tuple[Tensor, Tensor, Tensor]:
        """Per-component log-densities (B, K), variances (B, K, D), differences m_k - x (B, K, D)."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"`x_t` must have shape (B, {self.dim}), got {tuple(x.shape)}")
        s = expand_sigma(sigma, x, allow_zero=True)  # (B, 1); the components keep var > 0
        var = self.stds.to(x.dtype).square()[None] + s[:, :, None].square()  # (B, K, D)
        diff = self.means.to(x.dtype)[None] - x[:, None, :]
        comp = -0.5 * (diff.square() / var + var.log() + math.log(2 * math.pi)).sum(-1)
        return comp + self.log_weights.to(x.dtype), var, diff

    def log_prob(self, x_t: Tensor, sigma: Tensor | float) -> Tensor:
        """log p_sigma(x_t), shape (B,); sigma = 0 gives the clean density p_0."""
        return torch.logsumexp(self._parts(x_t, sigma)[0], dim=-1)

    def score(self, x_t: Tensor, sigma: Tensor | float) -> Tensor:
        """grad_x log p_sigma(x_t), shape (B, D)."""
        logc, var, diff = self._parts(x_t, sigma)
        gamma = torch.softmax(logc, dim=-1)  # (B, K)
        return (gamma[:, :, None] * diff / var).sum(1)

    def denoise(self, x_t: Tensor, sigma: Tensor | float) -> Tensor:
        """E[x_0 | x_t] = x_t + sigma^2 score, shape (B, D)."""
        return x_t + expand_sigma(sigma, x_t, allow_zero=True).square() * self.score(x_t, sigma)

    def sample(self, n: int, sigma: float = 0.0, *, generator: torch.Generator | None = None) -> Tensor:
        """n exact samples of p_sigma (sigma = 0: the clean mixture), shape (n, D)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"`n` must be an int >= 0, got {n!r}")
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not (math.isfinite(sigma) and sigma >= 0):
            raise ValueError(f"`sigma` must be a finite number >= 0, got {sigma!r}")
        dev = self.means.device
        if n == 0:
            return self.means.new_zeros(0, self.dim)
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        std = (self.stds[comp].square() + float(sigma) ** 2).sqrt()
        eps = torch.randn(n, self.dim, generator=generator, device=dev)
        return self.means[comp] + std * eps
