"""`FDistillConfig` and the registries it names (noise-level samplers, time weights)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import torch
from torch import Tensor

from ..divergences import Divergence
from ..engine import EngineConfig
from ._surrogate import check_fdistill_divergence

__all__ = ["FDistillConfig", "SIGMA_SAMPLERS", "TIME_WEIGHTS", "FEATURE_SOURCES"]

_EDM_P_MEAN, _EDM_P_STD = -1.2, 1.2  # EDM's training log-normal over sigma (Karras et al. 2022)


def _log_uniform(n: int, lo: float, hi: float, gen: torch.Generator, device: torch.device) -> Tensor:
    u = torch.rand(n, generator=gen, device=device)
    return torch.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))


def _edm_lognormal(n: int, lo: float, hi: float, gen: torch.Generator, device: torch.device) -> Tensor:
    z = torch.randn(n, generator=gen, device=device)
    return torch.exp(_EDM_P_MEAN + _EDM_P_STD * z).clamp(lo, hi)


# name -> (n, sigma_min, sigma_max, generator, device) -> (n,) noise levels
SIGMA_SAMPLERS: dict[str, Callable[..., Tensor]] = {"log_uniform": _log_uniform, "edm_lognormal": _edm_lognormal}
# name -> sigma (B,) -> w(sigma) (B,): the generator loss is E_sigma[w(sigma) D_f(p_sigma || q_sigma)];
# "sigma2" turns score differences into denoiser differences (DMD's scale), "none" weighs scores as is.
TIME_WEIGHTS: dict[str, Callable[[Tensor], Tensor]] = {"sigma2": torch.square, "none": torch.ones_like}
# where the discriminator's features come from: its own encoder, or the fake score network's trunk
FEATURE_SOURCES = ("own", "fake_score")


def _default_engine() -> EngineConfig:
    return EngineConfig(max_steps=2000, log_every=100, max_grad_norm=10.0, progress=False, tensorboard=False)


@dataclasses.dataclass
class FDistillConfig:
    """Settings of :class:`~divmin.diffusion.FDistill`; every field is checked on construction."""

    divergence: str | Divergence = "reverse_kl"  # f of D_f(teacher || student); needs a nonzero h (reverse_kl = DMD)
    batch_size: int = 256  # samples per generator and per critic update
    critic_steps: int = 4  # fake-score + discriminator updates per generator update (two time scales)
    critic_warmup: int = 0  # extra critic updates before the first generator update
    lr_generator: float = 1e-4  # Adam learning rate of the one-step generator
    lr_critic: float = 4e-4  # Adam learning rate of the fake score network and the discriminator
    adam_betas: tuple[float, float] = (0.0, 0.99)  # Adam betas of both optimizers (GAN-style, beta1 = 0)
    sigma_min: float = 0.02  # smallest noise level sampled
    sigma_max: float = 1.0  # largest noise level sampled (below the mode spacing is where divergences differ)
    sigma_sampling: str = "log_uniform"  # a name in SIGMA_SAMPLERS
    time_weight: str = "sigma2"  # a name in TIME_WEIGHTS
    normalize_h: bool = True  # divide h by its batch mean (DMD / FastGen normaliser)
    logit_clamp: float = 10.0  # the discriminator's logit (= log r estimate) is clamped to +-this
    ratio_clamp: tuple[float, float] = (0.1, 20.0)  # r after the per-bin EMA normalisation is clamped here
    time_bins: int = 10  # bins in log sigma of the running mean of r
    ratio_ema: float = 0.99  # EMA decay of the per-bin mean of r; 0 = no EMA normalisation
    disc_weight: float = 1.0  # weight of the discriminator's softplus loss in the critic loss
    gan_weight: float = 1e-3  # weight of the GAN loss softplus(-logit) on the generator; 0 = off
    feature_source: str = "own"  # a name in FEATURE_SOURCES
    ema_decay: float = 0.999  # EMA of the generator's weights (sampled with ema=True); 0 = copy
    eval_samples: int = 2000  # samples per evaluation (sliced Wasserstein to real samples)
    engine: EngineConfig = dataclasses.field(default_factory=_default_engine)  # max_steps = generator updates

    def __post_init__(self) -> None:
        check_fdistill_divergence(self.divergence)  # unknown names, h = 0 (TV) fail here
        for name in ("batch_size", "critic_steps", "time_bins", "eval_samples"):
            _check_int(name, getattr(self, name), 1)
        _check_int("critic_warmup", self.critic_warmup, 0)
        for name in ("lr_generator", "lr_critic", "sigma_min", "sigma_max", "logit_clamp"):
            _check_positive(name, getattr(self, name))
        for name in ("disc_weight", "gan_weight"):
            if not (_number(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"`{name}` must be a number >= 0, got {getattr(self, name)!r}")
        for name in ("ratio_ema", "ema_decay"):
            if not (_number(getattr(self, name)) and 0 <= getattr(self, name) < 1):
                raise ValueError(f"`{name}` must lie in [0, 1), got {getattr(self, name)!r}")
        if self.sigma_min >= self.sigma_max:
            raise ValueError(f"`sigma_min` ({self.sigma_min}) must be < `sigma_max` ({self.sigma_max})")
        lo, hi = self.ratio_clamp
        if not (_number(lo) and _number(hi) and 0 < lo < 1 < hi):
            raise ValueError(f"`ratio_clamp` must be (lo, hi) with 0 < lo < 1 < hi, got {self.ratio_clamp!r}")
        if len(self.adam_betas) != 2 or not all(_number(b) and 0 <= b < 1 for b in self.adam_betas):
            raise ValueError(f"`adam_betas` must be two numbers in [0, 1), got {self.adam_betas!r}")
        for name, valid in (("sigma_sampling", SIGMA_SAMPLERS), ("time_weight", TIME_WEIGHTS),
                            ("feature_source", FEATURE_SOURCES)):
            if getattr(self, name) not in valid:
                raise ValueError(f"`{name}` must be one of {sorted(valid)}, got {getattr(self, name)!r}")
        if not isinstance(self.normalize_h, bool):
            raise ValueError(f"`normalize_h` must be a bool, got {self.normalize_h!r}")
        if not isinstance(self.engine, EngineConfig):
            raise ValueError(f"`engine` must be an EngineConfig, got {type(self.engine).__name__}")


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}")


def _check_positive(name: str, value: Any) -> None:
    if not (_number(value) and value > 0):
        raise ValueError(f"`{name}` must be a finite number > 0, got {value!r}")
