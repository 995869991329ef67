"""`FDistillTrainer`: a one-step generator distilled from a diffusion teacher with any f-divergence.

One engine step = ``critic_steps`` critic updates, then one generator update:

* critic (optimizer "critic"): the fake score network D_phi is fitted by denoising
  score matching to fresh generator samples, so its score approximates s_Q, the
  score of the noised student q_sigma; the discriminator c_psi is trained with the
  logistic loss (:func:`divmin.estimators.logistic_discriminator_loss`) on noised
  teacher samples (label 1) vs noised generator samples (label 0), so at optimum
  its logit is log(p_sigma/q_sigma) = log r.
* generator (optimizer "generator"): x_t = G(z) + sigma eps and the surrogate
  :func:`fdistill_surrogate` with s_P from the teacher, s_Q from D_phi and
  log r from :class:`divmin.estimators.LogRatioEstimator`: the clamped logit,
  divided by a per-noise-level-bin EMA of the mean of r and clamped (the level is
  log sigma's position in [log sigma_min, log sigma_max]); h normalised by its
  batch mean; plus, optionally, a small GAN loss softplus(-c_psi(x_t)). An EMA
  copy of the generator follows.

References: Xu, Nie & Vahdat, "One-step Diffusion Models with f-Divergence
Distribution Matching" (2025); Yin et al., DMD / DMD2 (2024).
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..engine import MethodTrainer, StepContext, StepOutput, ema_copy, ema_update
from ..estimators import LogRatioEstimator, logistic_discriminator_loss
from ..eval import sliced_wasserstein
from ._config import SIGMA_SAMPLERS, TIME_WEIGHTS, FDistillConfig
from ._nets import RatioHead
from ._surrogate import fdistill_surrogate, fdistill_weight
from ._teacher import DiffusionTeacher

__all__ = ["FDistillTrainer"]

Sampler = Callable[[int, torch.Generator], Tensor]


class FDistillTrainer(MethodTrainer):
    """Distil ``teacher`` into the one-step ``generator`` (z ~ N(0, I) of ``sample_shape`` -> x_0).

    Args (the model first, the target second, as everywhere in divmin):
        generator: nn.Module, z (B, *sample_shape) -> x_0 (B, *sample_shape).
        teacher: a :class:`DiffusionTeacher` (``score(x_t, sigma)``); an ``nn.Module`` teacher is
            frozen and moved by the engine.
        fake_score: an :class:`EDMDenoiser`-like module with ``score``, ``features``, ``dsm_loss``.
        config: :class:`FDistillConfig` (keyword; None: defaults).
        sample_shape: shape of one sample, e.g. (2,) or (1, 8, 8).
        real: where the discriminator's teacher samples come from: None = ``teacher.sample(n,
            generator=...)`` (exact for :class:`GaussianMixtureTeacher`), a tensor (N, *sample_shape)
            drawn from uniformly, or a callable (n, torch.Generator) -> (n, *sample_shape).
        discriminator: a :class:`RatioHead`; default: one with its own copy of ``fake_score`` as
            encoder (``feature_source="own"``) or none (``"fake_score"``: shares its trunk).
        eval_metrics: optional callable, the evaluation's EMA-generator samples (n, *sample_shape) on
            CPU -> {name: float}, logged beside the sliced Wasserstein at every ``eval_every`` (e.g.
            modes covered, to tell from the logged curve whether training has converged).

    ``fit(resume=False)`` runs the engine (``config.engine``); the trained modules replace the
    inputs. A second ``fit`` continues from the current modules with fresh optimizers and EMA.
    """

    # the trained modules replace the inputs (and `generator_ema` appears)
    trained_models = {n: n for n in ("generator", "fake_score", "discriminator", "generator_ema")}

    def __init__(self, generator: nn.Module, teacher: DiffusionTeacher, fake_score: nn.Module, *,
                 config: FDistillConfig | None = None, sample_shape: tuple[int, ...],
                 real: Tensor | Sampler | None = None, discriminator: nn.Module | None = None,
                 eval_metrics: Callable[[Tensor], dict[str, float]] | None = None) -> None:
        config = self.use_config(config, FDistillConfig)
        if not callable(getattr(teacher, "score", None)):
            raise TypeError("`teacher` must have a score(x_t, sigma) method")
        for name, mod in (("generator", generator), ("fake_score", fake_score)):
            if not isinstance(mod, nn.Module):
                raise TypeError(f"`{name}` must be an nn.Module, got {type(mod).__name__}")
        if real is None and not callable(getattr(teacher, "sample", None)):
            raise ValueError("`real` is required when the teacher has no sample(n, generator=...) method")
        self.teacher, self.sample_shape = teacher, tuple(sample_shape)
        self.generator, self.fake_score = generator, fake_score
        if discriminator is None:
            encoder = copy.deepcopy(fake_score) if config.feature_source == "own" else None
            discriminator = RatioHead(fake_score.width, encoder=encoder)
        if eval_metrics is not None and not callable(eval_metrics):
            raise TypeError(f"`eval_metrics` must be callable (samples -> dict), got {type(eval_metrics).__name__}")
        self.discriminator, self.real, self.eval_metrics = discriminator, real, eval_metrics
        if isinstance(teacher, nn.Module):
            teacher.requires_grad_(False)
        # logit -> log r with the per-noise-level-bin EMA of E[r]: task state, kept across fits
        self.ratio_estimator = LogRatioEstimator(logit_clamp=config.logit_clamp, ratio_clamp=config.ratio_clamp,
                                                 num_bins=config.time_bins, ratio_ema=config.ratio_ema)

    @property
    def ratio_mean(self) -> Tensor:
        """(time_bins,) running mean of r per noise-level bin (``ratio_estimator.ratio_mean``)."""
        return self.ratio_estimator.ratio_mean

    # ------------------------------------------------------------------ public
    def make_task(self) -> _FDistillTask:
        return _FDistillTask(config=self.config, generator=self.generator, fake_score=self.fake_score,
                             discriminator=self.discriminator, teacher=self.teacher, sample_shape=self.sample_shape,
                             real=self.real, eval_metrics=self.eval_metrics, ratio_estimator=self.ratio_estimator)

    @torch.no_grad()
    def sample(self, n: int, *, ema: bool = True, generator: torch.Generator | None = None) -> Tensor:
        """n one-step samples (n, *sample_shape) from the (EMA) generator, on its device."""
        net = getattr(self, "generator_ema", None) if ema else None
        net = net if net is not None else self.generator
        dev = next(net.parameters()).device
        z = torch.randn(n, *self.sample_shape, generator=generator,
                        device=generator.device if generator is not None else dev)
        return net(z.to(dev))


class _FDistillTask:
    """The engine task behind :class:`FDistillTrainer`: the networks, the teacher, the data source and
    the log-ratio estimator (whose running mean outlives the task) come in as arguments."""

    def __init__(self, *, config: FDistillConfig, generator: nn.Module, fake_score: nn.Module,
                 discriminator: nn.Module, teacher: DiffusionTeacher, sample_shape: tuple[int, ...],
                 real: Tensor | Sampler | None, eval_metrics: Callable[[Tensor], dict[str, float]] | None,
                 ratio_estimator: LogRatioEstimator) -> None:
        self.c, self.sample_shape, self.real, self.eval_metrics = config, sample_shape, real, eval_metrics
        self.generator, self.fake_score = generator, fake_score
        self.discriminator, self.teacher = discriminator, teacher
        self.ratio_estimator = ratio_estimator
        self.static_models = ("teacher",) if isinstance(teacher, nn.Module) else ()
        # a discriminator with its own denoiser uses only its trunk: DDP must expect unused parameters
        self.find_unused_parameters = getattr(discriminator, "encoder", None) is not None

    def models(self) -> dict[str, nn.Module]:
        out = {"generator": self.generator, "generator_ema": ema_copy(self.generator), "fake_score": self.fake_score,
               "discriminator": self.discriminator}
        if isinstance(self.teacher, nn.Module):
            out["teacher"] = self.teacher
        return out

    def optimizers(self, models: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        c = self.c
        critic = list(models["fake_score"].parameters()) + list(models["discriminator"].parameters())
        return {"generator": torch.optim.Adam(models["generator"].parameters(), lr=c.lr_generator, betas=c.adam_betas,
                                             foreach=True),
                "critic": torch.optim.Adam(critic, lr=c.lr_critic, betas=c.adam_betas, foreach=True)}

    def state_dict(self) -> dict[str, Any]:
        return self.ratio_estimator.state_dict()  # {"ratio_mean": (time_bins,)}, as before the estimator

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ratio_estimator.load_state_dict(state)

    # ----------------------------------------------------------------- helpers
    def _teacher(self, ctx: StepContext) -> Any:
        return ctx.models["teacher"] if "teacher" in ctx.models else self.teacher

    def _noise(self, n: int, ctx: StepContext) -> tuple[Tensor, Tensor]:
        """Noise levels (n,) and Gaussian noise (n, *sample_shape)."""
        c = self.c
        sigma = SIGMA_SAMPLERS.get(c.sigma_sampling)(n, c.sigma_min, c.sigma_max, ctx.generator, ctx.device)
        return sigma, torch.randn(n, *self.sample_shape, generator=ctx.generator, device=ctx.device)

    def _real(self, n: int, ctx: StepContext,
              generators: tuple[torch.Generator, torch.Generator] | None = None) -> Tensor:
        """n teacher samples; ``generators`` (on the device, on CPU) default to the step's."""
        gen, cpu_gen = generators if generators is not None else (ctx.generator, ctx.cpu_generator)
        real = self.real
        if real is None:
            return self._teacher(ctx).sample(n, generator=gen).to(ctx.device)
        if isinstance(real, Tensor):
            idx = torch.randint(real.shape[0], (n,), generator=cpu_gen)
            return real[idx].to(ctx.device)
        return real(n, gen).to(ctx.device)

    def _logit(self, ctx: StepContext, x_t: Tensor, sigma: Tensor, *, unwrap: bool = False) -> Tensor:
        disc = ctx.unwrap("discriminator") if unwrap else ctx.models["discriminator"]
        if self.c.feature_source == "fake_score":
            feat = ctx.unwrap("fake_score").features(x_t, sigma) if unwrap else \
                ctx.call("fake_score", "features", x_t, sigma)  # a method: through the DDP wrapper
            return disc(x_t, sigma, feat)
        return disc(x_t, sigma)

    def _level(self, sigma: Tensor) -> Tensor:
        """(B,) position of log sigma in [log sigma_min, log sigma_max]: the estimator's level in [0, 1]."""
        c = self.c
        return (sigma.log() - math.log(c.sigma_min)) / (math.log(c.sigma_max) - math.log(c.sigma_min))

    def _log_ratio(self, logit: Tensor, sigma: Tensor) -> Tensor:
        """Clamped logit, divided by the per-level-bin running mean of r (updated here), clamped again."""
        return self.ratio_estimator(logit, level=self._level(sigma))

    # -------------------------------------------------------------------- steps
    def _critic_step(self, ctx: StepContext) -> dict[str, Tensor]:
        n, shared = self.c.batch_size, self.c.feature_source == "fake_score"
        with torch.no_grad():
            x0 = ctx.unwrap("generator")(torch.randn(n, *self.sample_shape, generator=ctx.generator, device=ctx.device))
        sigma, eps = self._noise(n, ctx)
        dsm, x_fake, feat_fake = ctx.call("fake_score", "dsm_terms", x0, sigma, eps)
        sig_r, eps_r = self._noise(n, ctx)
        x_real = self._real(n, ctx) + sig_r.view((-1,) + (1,) * (x0.ndim - 1)) * eps_r
        if shared:  # the fake samples' features come from the DSM forward
            logit_fake = ctx.models["discriminator"](x_fake, sigma, feat_fake)
            logit_real = self._logit(ctx, x_real, sig_r)
        else:  # one forward of the discriminator's own encoder on both halves
            logits = self._logit(ctx, torch.cat([x_fake.detach(), x_real]), torch.cat([sigma, sig_r]))
            logit_fake, logit_real = logits[:n], logits[n:]
        disc = logistic_discriminator_loss(logit_fake, logit_real)
        ctx.update("critic", dsm + self.c.disc_weight * disc)
        acc = 0.5 * ((logit_real > 0).float().mean() + (logit_fake < 0).float().mean())
        return {"critic/dsm": dsm.detach(), "critic/disc": disc.detach(), "critic/disc_acc": acc}

    def _generator_step(self, ctx: StepContext) -> dict[str, Tensor]:
        c, n = self.c, self.c.batch_size
        z = torch.randn(n, *self.sample_shape, generator=ctx.generator, device=ctx.device)
        x0 = ctx.models["generator"](z)
        sigma, eps = self._noise(n, ctx)
        x_t = x0 + sigma.view((-1,) + (1,) * (x0.ndim - 1)) * eps
        with torch.no_grad():
            xd = x_t.detach()
            s_p = self._teacher(ctx).score(xd, sigma)
            s_q = ctx.unwrap("fake_score").score(xd, sigma)
            log_r = self._log_ratio(self._logit(ctx, xd, sigma, unwrap=True), sigma)
        loss = fdistill_surrogate(x_t, s_q, s_p, log_r, divergence=c.divergence, normalize=c.normalize_h,
                                  time_weight=TIME_WEIGHTS.get(c.time_weight)(sigma))
        metrics = {"gen/log_r": log_r.mean(), "gen/h": fdistill_weight(log_r, divergence=c.divergence, normalize=False).mean()}
        if c.gan_weight > 0:
            with ctx.frozen("fake_score", "discriminator"):
                gan = F.softplus(-self._logit(ctx, x_t, sigma, unwrap=True)).mean()
            loss = loss + c.gan_weight * gan
            metrics["gen/gan"] = gan.detach()
        ctx.update("generator", loss)
        ema_update(ctx.unwrap("generator_ema"), ctx.unwrap("generator"), decay=c.ema_decay)
        return metrics

    def train_step(self, batch: Any, ctx: StepContext) -> StepOutput:
        critic: dict[str, Tensor] = {}
        for _ in range(self.c.critic_steps + (self.c.critic_warmup if ctx.step == 0 else 0)):
            critic = self._critic_step(ctx)
        return StepOutput(loss=None, metrics={**critic, **self._generator_step(ctx)})

    @torch.no_grad()
    def evaluate(self, ctx: StepContext) -> dict[str, Tensor]:
        """Sliced Wasserstein (flattened samples) between the EMA generator and real samples.

        Every evaluation of a run draws the same latents, real samples and projections (common
        random numbers, seeded from the engine seed), so the logged curve moves only when the
        generator does: its last stretch says whether training has converged.
        """
        n = self.c.eval_samples
        gen = torch.Generator(device=ctx.device).manual_seed(ctx.config.seed)
        cpu_gen = gen if ctx.device.type == "cpu" else torch.Generator().manual_seed(ctx.config.seed)
        fake = ctx.unwrap("generator_ema")(torch.randn(n, *self.sample_shape, generator=gen, device=ctx.device))
        real = self._real(n, ctx, (gen, cpu_gen))
        out = {"sliced_wasserstein": sliced_wasserstein(fake.flatten(1).float(), real.flatten(1).float(),
                                                        generator=gen)}
        if self.eval_metrics is not None:
            out.update({k: torch.tensor(float(v)) for k, v in self.eval_metrics(fake.float().cpu()).items()})
        return out

