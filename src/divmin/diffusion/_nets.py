"""Small networks for f-distill: EDM-preconditioned denoisers, one-step generators, the log-ratio head.

Denoisers use EDM's preconditioning (Karras et al. 2022, Table 1)::

    D(x, sigma) = c_skip x + c_out F(c_in x, c_noise),
    c_skip = sd^2/(sigma^2 + sd^2), c_out = sigma sd / sqrt(sigma^2 + sd^2),
    c_in = 1/sqrt(sigma^2 + sd^2), c_noise = log(sigma)/4,

with sd the data standard deviation, so F's target has unit variance at every
sigma. A backbone maps (c_in x (B, *shape), c_noise (B,)) to (F (B, *shape),
features (B, width)); the features feed the discriminator when it shares the
fake score network's trunk.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..divergences import check_real
from ._teacher import expand_sigma, score_from_denoiser

__all__ = ["ConvBackbone", "DenoiserGenerator", "EDMDenoiser", "MLPBackbone", "MLPGenerator", "RatioHead"]


def _noise_embedding(c_noise: Tensor, dim: int) -> Tensor:
    """(B,) -> (B, dim) Fourier features of c_noise = log(sigma)/4."""
    freqs = torch.exp(torch.linspace(0.0, math.log(64.0), dim // 2, device=c_noise.device))
    ang = c_noise.float()[:, None] * freqs[None] * math.pi
    return torch.cat([ang.sin(), ang.cos()], dim=-1)


def _sizes(**sizes: object) -> None:
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be an int >= 1, got {value!r}")


def _check_input(x: Tensor, c_noise: Tensor | None, shape: tuple[int | None, ...], name: str = "x") -> None:
    """x (B, *shape) floating (None: any size there) and c_noise (B,) (unless None)."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"`{name}` must be a floating tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.ndim != 1 + len(shape) or any(s is not None and d != s for d, s in zip(x.shape[1:], shape)):
        want = ", ".join("*" if s is None else str(s) for s in shape)
        raise ValueError(f"`{name}` must have shape (B, {want}), got {tuple(x.shape)}")
    if c_noise is not None and (not isinstance(c_noise, Tensor) or c_noise.shape != x.shape[:1]):
        raise ValueError(f"`c_noise` must have shape ({x.shape[0]},), got {tuple(getattr(c_noise, 'shape', ()))}")


class MLPBackbone(nn.Module):
    """Residual SiLU MLP on vectors (B, dim), conditioned on the noise level by addition."""

    def __init__(self, dim: int, hidden: int = 128, depth: int = 3, emb_dim: int = 32) -> None:
        super().__init__()
        _sizes(dim=dim, hidden=hidden, depth=depth, emb_dim=emb_dim)
        self.emb_dim, self.width = emb_dim, hidden
        self.inp = nn.Linear(dim, hidden)
        self.emb = nn.Sequential(nn.Linear(emb_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.blocks = nn.ModuleList(nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden)) for _ in range(depth))
        self.out = nn.Linear(hidden, dim)

    def forward(self, x: Tensor, c_noise: Tensor) -> tuple[Tensor, Tensor]:
        _check_input(x, c_noise, (self.inp.in_features,))
        h = self.inp(x) + self.emb(_noise_embedding(c_noise, self.emb_dim))
        for block in self.blocks:
            h = h + block(h)
        feat = F.silu(h)
        return self.out(feat), feat


class _ConvBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.GroupNorm(8, ch), nn.GroupNorm(8, ch)
        self.conv1, self.conv2 = nn.Conv2d(ch, ch, 3, padding=1), nn.Conv2d(ch, ch, 3, padding=1)
        self.emb = nn.Linear(ch, ch)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        y = self.conv1(F.silu(self.norm1(h))) + self.emb(emb)[:, :, None, None]
        return h + self.conv2(F.silu(self.norm2(y)))


class ConvBackbone(nn.Module):
    """Residual conv net at full resolution for small images (B, C, H, W), e.g. 8x8 digits."""

    def __init__(self, channels: int = 1, width: int = 64, depth: int = 4, emb_dim: int = 32) -> None:
        super().__init__()
        _sizes(channels=channels, width=width, depth=depth, emb_dim=emb_dim)
        if width % 8:
            raise ValueError(f"`width` must be a multiple of 8 (GroupNorm's 8 groups), got {width}")
        self.emb_dim, self.width = emb_dim, width
        self.inp = nn.Conv2d(channels, width, 3, padding=1)
        self.emb = nn.Sequential(nn.Linear(emb_dim, width), nn.SiLU(), nn.Linear(width, width))
        self.blocks = nn.ModuleList(_ConvBlock(width) for _ in range(depth))
        self.norm = nn.GroupNorm(8, width)
        self.out = nn.Conv2d(width, channels, 3, padding=1)

    def forward(self, x: Tensor, c_noise: Tensor) -> tuple[Tensor, Tensor]:
        _check_input(x, c_noise, (self.inp.in_channels, None, None))
        emb = self.emb(_noise_embedding(c_noise, self.emb_dim))
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        h = F.silu(self.norm(h))
        return self.out(h), h.mean(dim=(2, 3))


class EDMDenoiser(nn.Module):
    """``D(x, sigma)`` with EDM preconditioning around a backbone; also a score and features.

    Trained by denoising score matching, :meth:`dsm_loss`:
    E ||D(x_0 + sigma eps, sigma) - x_0||^2 (sigma^2 + sd^2)/(sigma sd)^2, averaged over the batch.
    """

    def __init__(self, backbone: nn.Module, sigma_data: float = 1.0) -> None:
        super().__init__()
        check_real("sigma_data", sigma_data, gt=0.0)
        if not isinstance(backbone, nn.Module):
            raise TypeError(f"`backbone` must be an nn.Module, got {type(backbone).__name__}")
        self.backbone, self.sigma_data = backbone, float(sigma_data)

    @property
    def width(self) -> int:
        return self.backbone.width

    def denoise_with_features(self, x: Tensor, sigma: Tensor | float) -> tuple[Tensor, Tensor]:
        """(D(x, sigma), trunk features (B, width)) from one forward."""
        s = expand_sigma(sigma, x)
        x = x.to(next(self.parameters()).dtype) if next(self.parameters(), None) is not None else x
        # hypot, not sqrt(sigma^2 + sd^2): sigma^2 overflows float32 past ~1.8e19 and c_out became inf / inf
        norm = torch.hypot(s, torch.full_like(s, self.sigma_data))  # sqrt(sigma^2 + sd^2)
        c_skip, c_out = (self.sigma_data / norm).square(), s * (self.sigma_data / norm)
        c_in = 1.0 / norm
        out, feat = self.backbone(c_in * x, s.flatten().log() / 4)
        return c_skip * x + c_out * out, feat

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        return self.denoise_with_features(x, sigma)[0]

    denoise = forward

    def score(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        return score_from_denoiser(self(x, sigma), x, sigma)

    def features(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """(B, width) trunk features at (x, sigma)."""
        return self.denoise_with_features(x, sigma)[1]

    def dsm_loss(self, x0: Tensor, sigma: Tensor, eps: Tensor) -> Tensor:
        """Denoising score matching on clean samples x0 (B, *shape) at sigma (B,) with noise eps."""
        return self.dsm_terms(x0, sigma, eps)[0]

    def dsm_terms(self, x0: Tensor, sigma: Tensor, eps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(DSM loss, x_t = x0 + sigma eps, features at x_t): the features can feed a discriminator."""
        s = expand_sigma(sigma, x0)
        if x0.shape[0] == 0:
            raise ValueError("`x0` is empty: the loss is a batch mean")
        if not isinstance(eps, Tensor) or eps.shape != x0.shape:
            raise ValueError(f"`eps` must have the shape of `x0` {tuple(x0.shape)}, "
                             f"got {tuple(getattr(eps, 'shape', ())) or type(eps).__name__}")
        x_t = x0 + s * eps
        # lambda(sigma) |D - x0|^2 with lambda = 1 / c_out^2 is |F - (x0 - c_skip x_t) / c_out|^2: the backbone's
        # own target, finite at every sigma (the weighted form is 0 * inf at tiny sigma and inf / inf at huge)
        x_t = x_t.to(next(self.parameters()).dtype) if next(self.parameters(), None) is not None else x_t
        norm = torch.hypot(s, torch.full_like(s, self.sigma_data))  # sqrt(sigma^2 + sd^2)
        out, feat = self.backbone(x_t / norm, s.flatten().log() / 4)
        target = s / (self.sigma_data * norm) * x0 - (self.sigma_data / norm) * eps
        err = (out.float() - target.float()).square()
        return err.flatten(1).sum(1).mean(), x_t, feat


class MLPGenerator(nn.Module):
    """One-step generator x = init_scale * z + MLP(z) on vectors; the MLP's last layer starts at 0.

    So at initialisation the generator is exactly N(0, init_scale^2 I): spread wide
    over the teacher's support, which keeps the first critic steps from collapsing it.
    """

    def __init__(self, dim: int, hidden: int = 128, depth: int = 3, init_scale: float = 3.0) -> None:
        super().__init__()
        _sizes(dim=dim, hidden=hidden, depth=depth)
        check_real("init_scale", init_scale)
        layers: list[nn.Module] = [nn.Linear(dim, hidden), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.SiLU()]
        last = nn.Linear(hidden, dim)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net, self.init_scale = nn.Sequential(*layers, last), float(init_scale)

    def forward(self, z: Tensor) -> Tensor:
        _check_input(z, None, (self.net[0].in_features,), "z")
        return self.init_scale * z + self.net(z)


class DenoiserGenerator(nn.Module):
    """One-step generator initialised from a teacher denoiser: x = D(sigma_init z, sigma_init) (DMD2)."""

    def __init__(self, denoiser: nn.Module, sigma_init: float) -> None:
        super().__init__()
        if not isinstance(denoiser, nn.Module):
            raise TypeError(f"`denoiser` must be an nn.Module, got {type(denoiser).__name__}")
        check_real("sigma_init", sigma_init, gt=0.0)
        self.denoiser, self.sigma_init = copy.deepcopy(denoiser), float(sigma_init)
        for p in self.denoiser.parameters():
            p.requires_grad_(True)

    def forward(self, z: Tensor) -> Tensor:
        return self.denoiser(self.sigma_init * z, self.sigma_init)


class RatioHead(nn.Module):
    """Discriminator whose logit estimates log r = log p_sigma / q_sigma.

    With ``encoder`` (e.g. an :class:`EDMDenoiser` of its own) it computes features from
    (x_t, sigma) itself; without, the caller passes features (e.g. the fake score
    network's trunk, so both are trained together).
    """

    def __init__(self, width: int, hidden: int = 128, encoder: nn.Module | None = None) -> None:
        super().__init__()
        _sizes(width=width, hidden=hidden)
        self.encoder = encoder
        self.head = nn.Sequential(nn.Linear(width + 1, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    def forward(self, x_t: Tensor, sigma: Tensor, features: Tensor | None = None) -> Tensor:
        if features is None:
            if self.encoder is None:
                raise ValueError("`features` are required by a RatioHead without an encoder")
            features = self.encoder.features(x_t, sigma)
        if not isinstance(features, Tensor) or not features.is_floating_point() \
                or features.shape != (x_t.shape[0], self.head[0].in_features - 1) \
                or not bool(features.detach().isfinite().all()):
            raise ValueError(f"`features` must be a finite, floating ({x_t.shape[0]}, {self.head[0].in_features - 1}) "
                             f"tensor, got {tuple(getattr(features, 'shape', ())) or type(features).__name__}")
        if not isinstance(sigma, Tensor) or sigma.numel() != x_t.shape[0] \
                or not bool((sigma > 0).all() and sigma.isfinite().all()):
            raise ValueError(f"`sigma` must be a ({x_t.shape[0]},) tensor of finite noise levels > 0")
        cond = sigma.reshape(-1, 1).log().to(features.dtype) / 4
        return self.head(torch.cat([features, cond], dim=-1)).squeeze(-1).float()
