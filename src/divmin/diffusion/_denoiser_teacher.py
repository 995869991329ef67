"""A learned teacher: a denoiser trained by denoising score matching on the shared engine, and EDM's sampler.

The teacher's score is Tweedie's ``(D(x, sigma) - x)/sigma^2``; its multi-step sampler
is EDM's deterministic Heun solver of the probability-flow ODE
dx/dsigma = (x - D(x, sigma))/sigma on the time steps (Karras et al. 2022, eq. 5)

    sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,  sigma_N = 0.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..engine import EngineConfig, Instance, Int, Number, OneOf, StepContext, Trainer, validate
from ..divergences import check_float_tensor, check_real
from ._config import SIGMA_SAMPLERS
from ._mdlm_checks import MAX_STEPS
from ._teacher import score_from_denoiser

__all__ = ["DenoiserTeacher", "DenoiserTrainingConfig", "edm_sampler", "edm_sigmas", "train_denoiser"]


def edm_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """(steps + 1,) decreasing noise levels of EDM, ending with 0 (0 < sigma_min <= sigma_max, rho > 0)."""
    _check_schedule(steps, sigma_min, sigma_max, rho)
    i = torch.arange(steps, dtype=torch.float64)
    ramp = sigma_max ** (1 / rho) + i / max(steps - 1, 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))
    return torch.cat([ramp**rho, torch.zeros(1, dtype=torch.float64)])


def _check_schedule(steps: object, sigma_min: object, sigma_max: object, rho: object) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int):
        raise TypeError(f"`steps` must be an int >= 1, got {type(steps).__name__} {steps!r}")
    if not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"`steps` must be an int in [1, {MAX_STEPS}], got {steps}")
    lo, hi = check_real("sigma_min", sigma_min, gt=0.0), check_real("sigma_max", sigma_max, gt=0.0)
    check_real("rho", rho, gt=0.0)
    if lo > hi:
        raise ValueError(f"`sigma_min` ({lo}) must be <= `sigma_max` ({hi})")


@torch.no_grad()
def edm_sampler(denoiser: nn.Module, noise: Tensor, *, steps: int = 18, sigma_min: float = 0.002,
                sigma_max: float = 80.0, rho: float = 7.0) -> Tensor:
    """Deterministic Heun sampler from x = sigma_max * noise (B, *shape) to a clean sample; 2 steps - 1 NFEs."""
    check_float_tensor("noise", noise)
    if noise.ndim < 1 or noise.shape[0] == 0 or not bool(noise.isfinite().all()):
        raise ValueError(f"`noise` must be a non-empty finite (B, *shape) tensor, got shape {tuple(noise.shape)}")
    sigmas = edm_sigmas(steps, sigma_min, sigma_max, rho).tolist()
    x = noise * sigmas[0]
    for s_cur, s_next in zip(sigmas[:-1], sigmas[1:]):
        d_cur = (x - denoiser(x, s_cur)) / s_cur
        x_next = x + (s_next - s_cur) * d_cur
        if s_next > 0:  # Heun correction
            d_next = (x_next - denoiser(x_next, s_next)) / s_next
            x_next = x + (s_next - s_cur) * 0.5 * (d_cur + d_next)
        x = x_next
    return x


class DenoiserTeacher(nn.Module):
    """Wrap a trained denoiser ``D(x, sigma)`` as a :class:`DiffusionTeacher` with a multi-step sampler."""

    def __init__(self, denoiser: nn.Module, *, sample_shape: tuple[int, ...], sigma_min: float = 0.002,
                 sigma_max: float = 80.0, sampler_steps: int = 18) -> None:
        super().__init__()
        if not isinstance(denoiser, nn.Module):
            raise TypeError(f"`denoiser` must be an nn.Module, got {type(denoiser).__name__}")
        if not isinstance(sample_shape, (tuple, list)) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in sample_shape):
            raise ValueError(f"`sample_shape` must be a tuple of ints >= 1, got {sample_shape!r}")
        _check_schedule(sampler_steps, sigma_min, sigma_max, 7.0)
        self.denoiser, self.sample_shape = denoiser, tuple(sample_shape)
        self.sigma_min, self.sigma_max, self.sampler_steps = float(sigma_min), float(sigma_max), int(sampler_steps)
        self.denoiser.requires_grad_(False)

    def denoise(self, x_t: Tensor, sigma: Tensor | float) -> Tensor:
        return self.denoiser(x_t, sigma)

    def score(self, x_t: Tensor, sigma: Tensor | float) -> Tensor:
        return score_from_denoiser(self.denoiser(x_t, sigma), x_t, sigma)

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, steps: int | None = None) -> Tensor:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"`n` must be an int >= 1, got {n!r}")
        dev = next(self.denoiser.parameters()).device
        noise = torch.randn(n, *self.sample_shape, generator=generator, device=dev)
        return edm_sampler(self.denoiser, noise, steps=steps or self.sampler_steps,
                           sigma_min=self.sigma_min, sigma_max=self.sigma_max)


@dataclasses.dataclass
class DenoiserTrainingConfig:
    """Settings of :func:`train_denoiser`."""

    batch_size: int = 128  # clean samples per step
    lr: float = 1e-3  # Adam learning rate
    sigma_sampling: str = "edm_lognormal"  # a name in SIGMA_SAMPLERS
    sigma_min: float = 0.002  # noise range of the sampler above
    sigma_max: float = 80.0  # (EDM's defaults)
    engine: EngineConfig = dataclasses.field(  # max_steps = training steps
        default_factory=lambda: EngineConfig(max_steps=2000, log_every=200, progress=False, tensorboard=False))

    CHECKS = dict(  # one per field: divmin.engine.validate
        batch_size=Int(ge=1), lr=Number(gt=0), sigma_sampling=OneOf(SIGMA_SAMPLERS), sigma_min=Number(gt=0),
        sigma_max=Number(gt=0), engine=Instance(EngineConfig),
    )

    def __post_init__(self) -> None:
        validate(self)
        if self.sigma_min >= self.sigma_max:
            raise ValueError(f"`sigma_min` ({self.sigma_min}) must be < `sigma_max` ({self.sigma_max})")


class _DSMTask:
    def __init__(self, denoiser: nn.Module, data: Tensor, config: DenoiserTrainingConfig) -> None:
        self.denoiser, self.data, self.c = denoiser, data, config

    def models(self) -> dict[str, nn.Module]:
        return {"denoiser": self.denoiser}

    def optimizers(self, models: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        return {"denoiser": torch.optim.Adam(models["denoiser"].parameters(), lr=self.c.lr)}

    def train_step(self, batch: Any, ctx: StepContext) -> Tensor:
        c = self.c
        idx = torch.randint(self.data.shape[0], (c.batch_size,), generator=ctx.cpu_generator)
        x0 = self.data[idx].to(ctx.device)
        sigma = SIGMA_SAMPLERS.get(c.sigma_sampling)(c.batch_size, c.sigma_min, c.sigma_max, ctx.generator, ctx.device)
        eps = torch.randn(x0.shape, generator=ctx.generator, device=ctx.device)
        return ctx.call("denoiser", "dsm_loss", x0, sigma, eps)  # a method: through the DDP wrapper


def train_denoiser(denoiser: nn.Module, data: Tensor, config: DenoiserTrainingConfig, *,
                   resume: bool | str | Path = False) -> DenoiserTeacher:
    """Fit ``denoiser`` (with a ``dsm_loss``) to clean ``data`` (N, *shape); return it as a frozen teacher.
    ``resume`` as in `Trainer.fit`."""
    if not isinstance(data, Tensor) or data.ndim < 2 or data.shape[0] == 0:
        raise ValueError("`data` must be a non-empty tensor of shape (N, *shape)")
    check_float_tensor("data", data)
    if not bool(data.isfinite().all()):
        raise ValueError("`data` must be finite (NaN/inf samples make the denoising loss NaN)")
    trainer = Trainer(_DSMTask(denoiser, data, config), config.engine)
    trainer.fit(resume=resume)
    trained = trainer.models["denoiser"]
    return DenoiserTeacher(trained, sample_shape=tuple(data.shape[1:]), sigma_min=config.sigma_min,
                           sigma_max=config.sigma_max)
