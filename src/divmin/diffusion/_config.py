"""`FDistillConfig` and the registries it names (noise-level samplers, time weights)."""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import torch
from torch import Tensor

from ..divergences import Divergence
from ..engine import Bool, EngineConfig, Instance, Int, IsDivergence, Number, OneOf, Tuple, is_default, validate
from ..registry import Registry

__all__ = ["FDistillConfig", "SIGMA_SAMPLERS", "TIME_WEIGHTS", "FEATURE_SOURCES"]

_EDM_P_MEAN, _EDM_P_STD = -1.2, 1.2  # EDM's training log-normal over sigma (Karras et al. 2022)


def _log_uniform(n: int, lo: float, hi: float, gen: torch.Generator, device: torch.device) -> Tensor:
    u = torch.rand(n, generator=gen, device=device)
    return torch.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))


def _edm_lognormal(n: int, lo: float, hi: float, gen: torch.Generator, device: torch.device) -> Tensor:
    z = torch.randn(n, generator=gen, device=device)
    return torch.exp(_EDM_P_MEAN + _EDM_P_STD * z).clamp(lo, hi)


# name -> (n, sigma_min, sigma_max, generator, device) -> (n,) noise levels
SIGMA_SAMPLERS: Registry[Callable[..., Tensor]] = Registry("sigma sampler")
SIGMA_SAMPLERS.add("log_uniform", _log_uniform)
SIGMA_SAMPLERS.add("edm_lognormal", _edm_lognormal)
# name -> sigma (B,) -> w(sigma) (B,): the generator loss is E_sigma[w(sigma) D_f(p_sigma || q_sigma)];
# "sigma2" turns score differences into denoiser differences (DMD's scale), "none" weighs scores as is.
TIME_WEIGHTS: Registry[Callable[[Tensor], Tensor]] = Registry("time weight")
TIME_WEIGHTS.add("sigma2", torch.square)
TIME_WEIGHTS.add("none", torch.ones_like)
# where the discriminator's features come from: its own encoder, or the fake score network's trunk
FEATURE_SOURCES = ("own", "fake_score")


def _default_engine() -> EngineConfig:
    return EngineConfig(max_steps=2000, log_every=100, max_grad_norm=10.0, progress=False, tensorboard=False)


@dataclasses.dataclass
class FDistillConfig:
    """Settings of :class:`~divmin.diffusion.FDistillTrainer`; every field is checked on construction."""

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

    CHECKS = dict(  # one per field: divmin.engine.validate
        divergence=IsDivergence(capability="score_weight"), batch_size=Int(ge=1), critic_steps=Int(ge=1),
        critic_warmup=Int(ge=0), lr_generator=Number(gt=0), lr_critic=Number(gt=0),
        adam_betas=Tuple((Number(ge=0, lt=1), Number(ge=0, lt=1))), sigma_min=Number(gt=0), sigma_max=Number(gt=0),
        sigma_sampling=OneOf(SIGMA_SAMPLERS), time_weight=OneOf(TIME_WEIGHTS), normalize_h=Bool(),
        logit_clamp=Number(gt=0), ratio_clamp=Tuple((Number(gt=0, lt=1), Number(gt=1))), time_bins=Int(ge=1),
        ratio_ema=Number(ge=0, lt=1), disc_weight=Number(ge=0), gan_weight=Number(ge=0),
        feature_source=OneOf(FEATURE_SOURCES), ema_decay=Number(ge=0, lt=1), eval_samples=Int(ge=1),
        engine=Instance(EngineConfig),
    )

    def __post_init__(self) -> None:
        validate(self)
        if self.sigma_min >= self.sigma_max:
            raise ValueError(f"`sigma_min` ({self.sigma_min}) must be < `sigma_max` ({self.sigma_max})")
        if self.ratio_ema == 0 and not is_default(self, "time_bins"):
            raise ValueError("`time_bins` only applies with `ratio_ema` > 0 (the per-bin EMA normalisation of r)")
        if self.disc_weight == 0 and self.gan_weight > 0:
            raise ValueError("`gan_weight` > 0 needs `disc_weight` > 0: the GAN loss uses the discriminator, "
                             "which is only trained with a positive disc_weight")
