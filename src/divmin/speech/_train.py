"""`SpeechToEGG`: training speech-to-EGG conversion on the shared engine (Prathosh et al., 2019).

Two phases on one engine run of ``engine.max_steps`` steps:

1. steps < ``ae_steps``: the EGG autoencoder, ``|| D(E_g(egg)) - egg ||^2`` (optimizer
   "autoencoder");
2. then, with E_g and D frozen: the critic (optimizer "critic", ``critic_steps`` updates
   per step) on ``logistic_discriminator_loss(c(E_s(speech)), c(E_g(egg)))``, and the speech
   encoder (optimizer "speech_encoder") on

       || D(E_s(speech)) - egg ||^2 + adv_weight * mean_Q f(r),  log r = LogRatioEstimator(c(E_s(speech)))

   i.e. D_f(p(z) || q(z)) = E_Q[f(p/q)] with the registry's f; reverse KL (f = -log r) is the
   paper's KL(q || p). ``adv_weight = 0`` is the "no-adversary" baseline (no critic).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..divergences import Divergence, as_divergence
from ..engine import (EngineConfig, Instance, Int, IsDivergence, MethodTrainer, Number, StepContext, StepOutput,
                      validate)
from ..estimators import LogRatioEstimator, logistic_discriminator_loss
from ._model import FrameDecoder, FrameEncoder, LatentCritic, frame_signal, overlap_add

__all__ = ["SpeechToEGG", "SpeechToEGGConfig"]


def _default_engine() -> EngineConfig:
    return EngineConfig(max_steps=2000, log_every=100, progress=False, tensorboard=False)


@dataclasses.dataclass
class SpeechToEGGConfig:
    """Settings of :class:`SpeechToEGG`; every field is checked on construction."""

    frame_len: int = 256  # samples per frame (16 ms at 16 kHz)
    hop: int = 128  # frame hop for prediction (overlap-add)
    latent_dim: int = 16  # size of the codes z
    hidden: int = 128  # width of the MLPs
    batch_size: int = 64  # frame pairs per step
    ae_steps: int = 500  # engine steps of EGG-autoencoder pre-training (phase 1)
    critic_steps: int = 1  # critic updates per speech-encoder update (phase 2)
    adv_weight: float = 0.1  # weight of the adversarial latent term; 0 = the no-adversary baseline
    divergence: str | Divergence = "reverse_kl"  # f of D_f(p(z) || q(z)); reverse_kl = the paper's KL(q || p)
    lr: float = 1e-3  # Adam learning rate of the autoencoder and the speech encoder
    lr_critic: float = 1e-3  # Adam learning rate of the critic
    logit_clamp: float = 10.0  # the critic's logit (log r estimate) is clamped to +-this
    engine: EngineConfig = dataclasses.field(default_factory=_default_engine)

    CHECKS = dict(
        frame_len=Int(ge=8), hop=Int(ge=1), latent_dim=Int(ge=1), hidden=Int(ge=1), batch_size=Int(ge=1),
        ae_steps=Int(ge=0), critic_steps=Int(ge=1), adv_weight=Number(ge=0), divergence=IsDivergence(),
        lr=Number(gt=0), lr_critic=Number(gt=0), logit_clamp=Number(gt=0), engine=Instance(EngineConfig),
    )

    def __post_init__(self) -> None:
        validate(self)
        if self.hop > self.frame_len:
            raise ValueError(f"`hop` ({self.hop}) must be <= `frame_len` ({self.frame_len})")
        if self.ae_steps >= self.engine.max_steps:
            raise ValueError(f"`ae_steps` ({self.ae_steps}) must be < engine.max_steps ({self.engine.max_steps})")


def _paired_frames(speech, egg, frame_len: int, hop: int) -> tuple[Tensor, Tensor]:
    s, e = torch.as_tensor(speech, dtype=torch.float32), torch.as_tensor(egg, dtype=torch.float32)
    if s.ndim == 1:
        s, e = s[None], e[None]
    if s.ndim != 2 or s.shape != e.shape or s.shape[1] < frame_len:
        raise ValueError(f"`speech` and `egg` must be (T,) or (U, T) of equal shape with T >= frame_len, got "
                         f"{tuple(s.shape)} and {tuple(e.shape)}")
    return (torch.cat([frame_signal(x, frame_len, hop) for x in s]),
            torch.cat([frame_signal(x, frame_len, hop) for x in e]))


class SpeechToEGG(MethodTrainer):
    """Speech -> EGG by adversarial approximate inference; ``train()`` then ``predict(speech)``.

    Args:
        speech, egg: paired training signals, (T,) or (U, T) with equal shapes (one sample rate);
            cut into training frames of ``frame_len`` at hop ``frame_len // 4``.
        config: a :class:`SpeechToEGGConfig`.

    Models (engine names): ``egg_encoder``, ``decoder``, ``speech_encoder``, ``critic``.
    """

    trained_models = {n: n for n in ("egg_encoder", "decoder", "speech_encoder", "critic")}

    def __init__(self, speech, egg, config: SpeechToEGGConfig | None = None) -> None:
        c = self.use_config(config, SpeechToEGGConfig)
        self.speech_frames, self.egg_frames = _paired_frames(speech, egg, c.frame_len, c.frame_len // 4 or 1)
        with torch.random.fork_rng(devices=[]):  # initialise from engine.seed, leave the global RNG alone
            torch.manual_seed(c.engine.seed)
            self.egg_encoder = FrameEncoder(c.frame_len, c.latent_dim, c.hidden)
            self.speech_encoder = FrameEncoder(c.frame_len, c.latent_dim, c.hidden)
            self.decoder = FrameDecoder(c.frame_len, c.latent_dim, c.hidden)
            self.critic = LatentCritic(c.latent_dim, c.hidden)
        self.divergence = as_divergence(c.divergence)
        self.ratio_estimator = LogRatioEstimator(logit_clamp=c.logit_clamp, ratio_clamp=None, ratio_ema=0.0)

    def make_task(self) -> _Task:
        return _Task(self)

    @torch.no_grad()
    def predict(self, speech) -> Tensor:
        """The predicted EGG (T,) of mono ``speech`` (T,): frames, E_s, D, overlap-add."""
        c = self.config
        x = torch.as_tensor(speech, dtype=torch.float32)
        frames = frame_signal(x, c.frame_len, c.hop)
        dev = next(self.decoder.parameters()).device
        return overlap_add(self.decoder(self.speech_encoder(frames.to(dev))).cpu(), c.hop, x.numel())


class _Task:
    find_unused_parameters = True  # each phase trains a subset of the models

    def __init__(self, owner: SpeechToEGG) -> None:
        self.o, self.c = owner, owner.config

    def models(self) -> dict[str, torch.nn.Module]:
        o = self.o
        return {"egg_encoder": o.egg_encoder, "decoder": o.decoder, "speech_encoder": o.speech_encoder,
                "critic": o.critic}

    def optimizers(self, models: dict[str, torch.nn.Module]) -> dict[str, torch.optim.Optimizer]:
        c = self.c
        ae = list(models["egg_encoder"].parameters()) + list(models["decoder"].parameters())
        return {"autoencoder": torch.optim.Adam(ae, lr=c.lr),
                "speech_encoder": torch.optim.Adam(models["speech_encoder"].parameters(), lr=c.lr),
                "critic": torch.optim.Adam(models["critic"].parameters(), lr=c.lr_critic)}

    def _batch(self, ctx: StepContext) -> tuple[Tensor, Tensor]:
        idx = torch.randint(self.o.speech_frames.shape[0], (self.c.batch_size,), generator=ctx.cpu_generator)
        return self.o.speech_frames[idx].to(ctx.device), self.o.egg_frames[idx].to(ctx.device)

    def train_step(self, batch: Any, ctx: StepContext) -> StepOutput:
        speech, egg = self._batch(ctx)
        if ctx.step < self.c.ae_steps:
            recon = F.mse_loss(ctx.models["decoder"](ctx.models["egg_encoder"](egg)), egg)
            ctx.update("autoencoder", recon)
            return StepOutput(metrics={"ae_recon": recon.detach()})
        with torch.no_grad():
            z_p = ctx.unwrap("egg_encoder")(egg)
        metrics: dict[str, Tensor] = {}
        if self.c.adv_weight > 0:
            for _ in range(self.c.critic_steps):
                with torch.no_grad():
                    z_q = ctx.unwrap("speech_encoder")(speech)
                disc = logistic_discriminator_loss(ctx.models["critic"](z_q), ctx.models["critic"](z_p))
                ctx.update("critic", disc)
            metrics["critic_loss"] = disc.detach()
        z_q = ctx.models["speech_encoder"](speech)
        with ctx.frozen("decoder", "critic"):
            recon = F.mse_loss(ctx.unwrap("decoder")(z_q), egg)
            loss = recon
            if self.c.adv_weight > 0:
                log_r = self.o.ratio_estimator(ctx.unwrap("critic")(z_q))
                adv = self.o.divergence.f(log_r).mean()
                loss = recon + self.c.adv_weight * adv
                metrics["latent_divergence"] = adv.detach()
            ctx.update("speech_encoder", loss)
        metrics["recon"] = recon.detach()
        return StepOutput(metrics=metrics)
