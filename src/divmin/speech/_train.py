"""`SpeechToEGGTrainer`: training speech-to-EGG conversion on the shared engine (Prathosh et al., 2019).

Two phases on one engine run of ``engine.max_steps`` steps:

1. steps < ``ae_steps``: the EGG autoencoder, ``loss(D(E_g(egg)), egg)`` (optimizer
   "autoencoder");
2. then, with E_g and D frozen: the critic (optimizer "critic", ``critic_steps`` updates
   per step) on ``logistic_discriminator_loss(c(z_q), c(z_p))`` with ``critic_codes`` code
   vectors z_q of E_s(speech) and z_p of E_g(egg) at the same random (frame, sample)
   positions, and the speech encoder (optimizer "speech_encoder") on

       loss(D(E_s(speech)), egg) + adv_weight * mean_Q f(r),  log r = LogRatioEstimator(c(z_q))

   i.e. D_f(p(z) || q(z)) = E_Q[f(p/q)] with the registry's f; reverse KL (f = -log r) is the
   paper's KL(q || p). ``adv_weight = 0`` is the "no-adversary" baseline (no critic). With
   ``adv_warmup`` the weight at phase-2 step k (from 1) is adv_weight * min(1, k / adv_warmup),
   as in KL annealing (Bowman et al., 2016): the critic trains from the start of phase 2 but
   its gradient reaches the speech encoder gradually, once the reconstruction has a start.

With ``unpaired_speech`` (speech without EGG, the scarce-pair setting), the latent matching runs on
all speech: each phase-2 step also draws ``batch_size`` frames from the pool of paired and unpaired
speech frames, and z_q of the critic's updates and of the adversarial term are codes of E_s on those
frames; the reconstruction still uses only the paired batch. Without it (None), the codes come from
the paired batch, and every random draw is as before.

``loss`` is :func:`egg_loss`: squared error of the EGG plus ``deriv_weight`` times that of its
first difference (the closures, whose dEGG peaks are the GCIs). Speech is scaled to unit RMS
per utterance (:func:`normalize_speech`), in training and in :meth:`SpeechToEGGTrainer.predict`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..divergences import Divergence, as_divergence
from ..divergences.kernels import NonFiniteInputError
from ..engine import (EngineConfig, Instance, Int, IsDivergence, MethodTrainer, Number, StepContext, StepOutput,
                      validate)
from ..estimators import LogRatioEstimator, logistic_discriminator_loss
from ._model import FrameDecoder, FrameEncoder, LatentCritic, frame_signal, overlap_add

__all__ = ["SpeechToEGGConfig", "SpeechToEGGTrainer", "egg_loss", "normalize_speech"]


def _default_engine() -> EngineConfig:
    return EngineConfig(max_steps=2000, log_every=100, progress=False, tensorboard=False)


@dataclasses.dataclass
class SpeechToEGGConfig:
    """Settings of :class:`SpeechToEGGTrainer`; every field is checked on construction."""

    frame_len: int = 256  # samples per frame (32 ms at 8 kHz: several pitch periods)
    hop: int = 64  # frame hop for prediction (tapered overlap-add)
    latent_dim: int = 8  # size of each code vector z (one per sample)
    hidden: int = 32  # channels of the convolutions, width of the critic
    layers: int = 6  # dilated conv layers of each encoder (dilations 1 ... 2^(layers-1))
    decoder_layers: int = 3  # dilated conv layers of the decoder
    kernel: int = 5  # conv kernel size (odd)
    batch_size: int = 32  # frame pairs per step
    critic_codes: int = 512  # code vectors per side the critic sees each update (random positions)
    deriv_weight: float = 10.0  # weight of the EGG-derivative error in the reconstruction loss (sharp closures)
    ae_steps: int = 500  # engine steps of EGG-autoencoder pre-training (phase 1)
    critic_steps: int = 1  # critic updates per speech-encoder update (phase 2)
    adv_weight: float = 0.1  # weight of the adversarial latent term; 0 = the no-adversary baseline
    adv_warmup: int = 0  # phase-2 steps over which that weight ramps linearly up from 0 (KL annealing)
    divergence: str | Divergence = "reverse_kl"  # f of D_f(p(z) || q(z)); reverse_kl = the paper's KL(q || p)
    lr: float = 1e-3  # Adam learning rate of the autoencoder and the speech encoder
    lr_critic: float = 1e-3  # Adam learning rate of the critic
    logit_clamp: float = 10.0  # the critic's logit (log r estimate) is clamped to +-this
    engine: EngineConfig = dataclasses.field(default_factory=_default_engine)

    CHECKS = dict(
        frame_len=Int(ge=8), hop=Int(ge=1), latent_dim=Int(ge=1), hidden=Int(ge=1), layers=Int(ge=1),
        decoder_layers=Int(ge=1), kernel=Int(ge=1), batch_size=Int(ge=1), critic_codes=Int(ge=1),
        deriv_weight=Number(ge=0), ae_steps=Int(ge=0), critic_steps=Int(ge=1), adv_weight=Number(ge=0),
        adv_warmup=Int(ge=0), divergence=IsDivergence(),
        lr=Number(gt=0), lr_critic=Number(gt=0), logit_clamp=Number(gt=0), engine=Instance(EngineConfig),
    )

    def __post_init__(self) -> None:
        validate(self)
        if self.hop > self.frame_len:
            raise ValueError(f"`hop` ({self.hop}) must be <= `frame_len` ({self.frame_len})")
        if self.kernel % 2 == 0:
            raise ValueError(f"`kernel` must be odd, got {self.kernel}")
        if self.ae_steps >= self.engine.max_steps:
            raise ValueError(f"`ae_steps` ({self.ae_steps}) must be < engine.max_steps ({self.engine.max_steps})")


def normalize_speech(x: Tensor) -> Tensor:
    """Speech (..., T) scaled to unit RMS along T (the level of a recording carries no glottal timing).

    The RMS is taken of x / max|x| (then scaled back), so no finite level overflows its square;
    a silent row stays zero.
    """
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"`x` must be a floating torch.Tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.ndim < 1 or x.shape[-1] < 1:
        raise ValueError(f"`x` must have shape (..., T >= 1), got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("`x` must be finite")
    work = x.to(torch.promote_types(x.dtype, torch.float32))  # 1e-8 is 0 in float16
    peak = work.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(work.dtype).tiny)
    unit = work / peak
    return (unit / unit.pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1e-8)).to(x.dtype)


def _real(x, name: str) -> Tensor:
    """``x`` (a tensor, array or sequence of real numbers) as a float32 CPU tensor."""
    x = x.detach().cpu() if isinstance(x, Tensor) else x
    if x.is_complex() if isinstance(x, Tensor) else np.iscomplexobj(x):
        raise TypeError(f"`{name}` must be real, got a complex signal")
    try:
        return torch.as_tensor(x, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"`{name}` must be a signal of real numbers: {err}") from None


def _paired_frames(speech, egg, frame_len: int, hop: int) -> tuple[Tensor, Tensor]:
    s, e = _real(speech, "speech"), _real(egg, "egg")
    if s.ndim == 1:
        s, e = s[None], e[None]
    if s.ndim != 2 or s.shape != e.shape or s.shape[1] < frame_len:
        raise ValueError(f"`speech` and `egg` must be (T,) or (U, T) of equal shape with T >= frame_len, got "
                         f"{tuple(s.shape)} and {tuple(e.shape)}")
    if not (torch.isfinite(s).all() and torch.isfinite(e).all()):
        raise ValueError("`speech` and `egg` must be finite")
    s = normalize_speech(s)
    return (torch.cat([frame_signal(x, frame_len, hop) for x in s]),
            torch.cat([frame_signal(x, frame_len, hop) for x in e]))


def _speech_frames(speech, frame_len: int, hop: int) -> Tensor:
    """Training frames (N, frame_len) of unpaired speech (T,) or (U, T), each utterance at unit RMS."""
    s = _real(speech, "unpaired_speech")
    s = s[None] if s.ndim == 1 else s
    if s.ndim != 2 or s.shape[0] < 1 or s.shape[1] < frame_len:
        raise ValueError(f"`unpaired_speech` must be (T,) or (U, T) with U >= 1 and T >= frame_len ({frame_len}), "
                         f"got {tuple(s.shape)}")
    if not torch.isfinite(s).all():
        raise ValueError("`unpaired_speech` must be finite")
    return torch.cat([frame_signal(x, frame_len, hop) for x in normalize_speech(s)])


class SpeechToEGGTrainer(MethodTrainer):
    """Speech -> EGG by adversarial approximate inference; ``fit()`` then ``predict(speech)``.

    Args:
        speech, egg: paired training signals, (T,) or (U, T) with equal shapes (one sample rate);
            cut into training frames of ``frame_len`` at hop ``frame_len // 4``.
        config: a :class:`SpeechToEGGConfig` (keyword; None: defaults).
        unpaired_speech: speech without EGG, (T',) or (U', T') (keyword; None: none), used only by the
            adversarial latent matching, which then sees paired and unpaired speech alike.

    Models (engine names): ``egg_encoder``, ``decoder``, ``speech_encoder``, ``critic``.
    """

    trained_models = {n: n for n in ("egg_encoder", "decoder", "speech_encoder", "critic")}

    def __init__(self, speech, egg, *, config: SpeechToEGGConfig | None = None, unpaired_speech=None) -> None:
        c = self.use_config(config, SpeechToEGGConfig)
        self.speech_frames, self.egg_frames = _paired_frames(speech, egg, c.frame_len, c.frame_len // 4 or 1)
        # the adversary's pool: every speech frame, paired first (None: the paired batch is the pool)
        self.all_speech_frames = (None if unpaired_speech is None else
                                  torch.cat([self.speech_frames,
                                             _speech_frames(unpaired_speech, c.frame_len, c.frame_len // 4 or 1)]))
        with torch.random.fork_rng(devices=[]):  # initialise from engine.seed, leave the global RNG alone
            torch.manual_seed(c.engine.seed)
            self.egg_encoder = FrameEncoder(c.latent_dim, c.hidden, c.layers, c.kernel)
            self.speech_encoder = FrameEncoder(c.latent_dim, c.hidden, c.layers, c.kernel)
            self.decoder = FrameDecoder(c.latent_dim, c.hidden, c.decoder_layers, c.kernel)
            self.critic = LatentCritic(c.latent_dim, c.hidden)
        self.divergence = as_divergence(c.divergence)
        self.ratio_estimator = LogRatioEstimator(logit_clamp=c.logit_clamp, ratio_clamp=None, ratio_ema=0.0)

    def make_task(self) -> _SpeechToEGGTask:
        return _SpeechToEGGTask(config=self.config, models={n: getattr(self, n) for n in self.trained_models},
                                speech_frames=self.speech_frames, egg_frames=self.egg_frames,
                                all_speech_frames=self.all_speech_frames,
                                divergence=self.divergence, ratio_estimator=self.ratio_estimator)

    @torch.no_grad()
    def predict(self, speech) -> Tensor:
        """The predicted EGG (T,) of mono ``speech`` (T,): unit RMS, frames, E_s, D, overlap-add
        with a Hann taper (floored at 1e-3 so every sample has weight)."""
        c = self.config
        x = _real(speech, "speech")
        if x.ndim != 1 or x.numel() < 2:
            raise ValueError(f"`speech` must be mono (1-D) and non-empty, got shape {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError("`speech` must be finite")
        if self.engine is None:
            raise ValueError("the speech encoder and decoder are untrained: call `fit` first")
        frames = frame_signal(normalize_speech(x), c.frame_len, c.hop)
        dev = next(self.decoder.parameters()).device
        out = torch.cat([self.decoder(self.speech_encoder(f.to(dev))).cpu() for f in frames.split(256)])
        window = torch.hann_window(c.frame_len, periodic=False).clamp_min(1e-3)
        return overlap_add(out, c.hop, x.numel(), window=window)


def egg_loss(pred: Tensor, egg: Tensor, deriv_weight: float) -> Tensor:
    """Reconstruction error of EGG frames (B, L): mean (pred - egg)^2 + w mean (d pred - d egg)^2,
    d the first difference along L; the derivative term weights the closures, whose peaks give the GCIs.

    Accumulated in at least float32. With ``deriv_weight > 0`` the frames need L >= 2 samples.
    """
    for name, t in (("pred", pred), ("egg", egg)):
        if not isinstance(t, Tensor) or not t.is_floating_point():
            raise TypeError(f"`{name}` must be a floating torch.Tensor, got {getattr(t, 'dtype', type(t).__name__)}")
    if pred.ndim < 1 or pred.numel() == 0:
        raise ValueError(f"`pred` must be non-empty frames (B, L), got shape {tuple(pred.shape)}")
    if egg.shape != pred.shape:
        raise ValueError(f"`egg` must have the shape of `pred` {tuple(pred.shape)}, got {tuple(egg.shape)}")
    Number(ge=0)("deriv_weight", deriv_weight)
    if deriv_weight > 0 and pred.shape[-1] < 2:
        raise ValueError(f"`pred` frames need at least 2 samples for the derivative term, got shape "
                         f"{tuple(pred.shape)}")
    for name, t in (("pred", pred), ("egg", egg)):
        if not bool(torch.isfinite(t).all()):  # inf - inf: a NaN loss; the engine reports it by step
            raise NonFiniteInputError(f"`{name}` must be finite")
    dtype = torch.promote_types(torch.promote_types(pred.dtype, egg.dtype), torch.float32)
    pred, egg = pred.to(dtype), egg.to(dtype)
    err = F.mse_loss(pred, egg)
    if deriv_weight > 0:
        err = err + deriv_weight * F.mse_loss(pred.diff(dim=-1), egg.diff(dim=-1))
    return err


class _SpeechToEGGTask:
    find_unused_parameters = True  # each phase trains a subset of the models

    def __init__(self, *, config: SpeechToEGGConfig, models: dict[str, torch.nn.Module], speech_frames: Tensor,
                 egg_frames: Tensor, divergence: Divergence, ratio_estimator: LogRatioEstimator,
                 all_speech_frames: Tensor | None = None) -> None:
        self.c, self._models, self.divergence, self.ratio_estimator = config, models, divergence, ratio_estimator
        self.speech_frames, self.egg_frames, self.all_speech_frames = speech_frames, egg_frames, all_speech_frames

    def models(self) -> dict[str, torch.nn.Module]:
        """The four networks by engine name: egg_encoder, decoder, speech_encoder, critic."""
        return dict(self._models)

    def optimizers(self, models: dict[str, torch.nn.Module]) -> dict[str, torch.optim.Optimizer]:
        c = self.c
        ae = list(models["egg_encoder"].parameters()) + list(models["decoder"].parameters())
        return {"autoencoder": torch.optim.Adam(ae, lr=c.lr),
                "speech_encoder": torch.optim.Adam(models["speech_encoder"].parameters(), lr=c.lr),
                "critic": torch.optim.Adam(models["critic"].parameters(), lr=c.lr_critic)}

    def _batch(self, ctx: StepContext) -> tuple[Tensor, Tensor]:
        idx = torch.randint(self.speech_frames.shape[0], (self.c.batch_size,), generator=ctx.cpu_generator)
        return self.speech_frames[idx].to(ctx.device), self.egg_frames[idx].to(ctx.device)

    def _prior_batch(self, speech: Tensor, ctx: StepContext) -> Tensor | None:
        """The frames whose codes the adversary matches to the prior: None = the paired batch ``speech``
        (no extra draw, so runs without unpaired speech keep their random stream); else ``batch_size``
        frames drawn from all speech, paired and unpaired."""
        if self.all_speech_frames is None:
            return None
        idx = torch.randint(self.all_speech_frames.shape[0], (speech.shape[0],), generator=ctx.cpu_generator)
        return self.all_speech_frames[idx].to(ctx.device)

    def _codes(self, z: Tensor, pos: Tensor) -> Tensor:
        """Code vectors (n, latent_dim) at flat positions ``pos`` of codes z (B, latent_dim, L)."""
        return z.transpose(1, 2).reshape(-1, z.shape[1])[pos]

    def train_step(self, batch: Any, ctx: StepContext) -> StepOutput:
        speech, egg = self._batch(ctx)
        if ctx.step < self.c.ae_steps:
            recon = egg_loss(ctx.models["decoder"](ctx.models["egg_encoder"](egg)), egg, self.c.deriv_weight)
            ctx.update("autoencoder", recon)
            return StepOutput(metrics={"ae_recon": recon.detach()})
        n_codes = speech.shape[0] * speech.shape[1]
        pos = torch.randint(n_codes, (min(self.c.critic_codes, n_codes),), generator=ctx.cpu_generator).to(ctx.device)
        with torch.no_grad():
            z_p = self._codes(ctx.unwrap("egg_encoder")(egg), pos)
        metrics: dict[str, Tensor] = {}
        prior = self._prior_batch(speech, ctx) if self.c.adv_weight > 0 else None
        if self.c.adv_weight > 0:
            with torch.no_grad():  # the speech encoder does not move during the critic's updates
                z_q = self._codes(ctx.unwrap("speech_encoder")(speech if prior is None else prior), pos)
            for _ in range(self.c.critic_steps):
                disc = logistic_discriminator_loss(ctx.models["critic"](z_q), ctx.models["critic"](z_p))
                ctx.update("critic", disc)
            metrics["critic_loss"] = disc.detach()
        z_q = ctx.models["speech_encoder"](speech)
        with ctx.frozen("decoder", "critic"):
            recon = egg_loss(ctx.unwrap("decoder")(z_q), egg, self.c.deriv_weight)
            loss = recon
            if self.c.adv_weight > 0:
                z_adv = z_q if prior is None else ctx.models["speech_encoder"](prior)
                log_r = self.ratio_estimator(ctx.unwrap("critic")(self._codes(z_adv, pos)))
                adv = self.divergence.f(log_r).mean()
                k, warm = ctx.step - self.c.ae_steps + 1, self.c.adv_warmup
                weight = self.c.adv_weight * (1.0 if warm == 0 else min(1.0, k / warm))
                loss = recon + weight * adv
                metrics["latent_divergence"], metrics["adv_weight"] = adv.detach(), torch.tensor(weight)
            ctx.update("speech_encoder", loss)
        metrics["recon"] = recon.detach()
        return StepOutput(metrics=metrics)
