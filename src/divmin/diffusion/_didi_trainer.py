"""`DiDiTrainer`: distil a few-step student from a masked diffusion LM teacher with DiDi-Instruct.

One engine step (the math in :mod:`divmin.diffusion._didi`):

1. the student samples ``batch_size`` ancestral paths 1 -> tau -> 0 (tau ~ Beta, one per step;
   1 -> 0 without intermediate matching), without gradient;
2. ``disc_steps`` discriminator updates (optimizer "discriminator"): teacher samples (a pool drawn
   once with ``teacher_nfe`` steps) and the student's x_0, both masked at t ~ U(t_min, 1), labelled
   1 and 0 in :func:`divmin.estimators.logistic_discriminator_loss`;
3. one student update (optimizer "student"): the paths' x_0 are masked at a time t shared by each
   group of G, the discriminator's logit (clamped, :class:`divmin.estimators.LogRatioEstimator`)
   is log r_t, the divergence member turns it into a reward, rewards are standardised per group
   (or centred by a moving baseline), and REINFORCE runs on log Q(path);
4. the student's EMA moves; the EMA samples (``sample``, and the evaluation).

The student and the discriminator's trunk start as copies of the teacher.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
from scipy.special import betaincinv
from torch import Tensor

from ..data import check_token_ids
from ..engine import MethodTrainer, StepContext, StepOutput, ema_copy, ema_update
from ..estimators import LogRatioEstimator, MovingBaseline, logistic_discriminator_loss
from ..eval import generative_perplexity, unigram_entropy
from ._didi import MaskedDiscriminator, integral_policy_loss, path_log_prob
from ._didi_config import DiDiConfig
from ._didi_sampler import guided_sample
from ._mdlm import MaskedDiffusionLM, mdlm_sample, sample_times

__all__ = ["DiDiInstruct", "DiDiTrainer"]


class DiDiTrainer(MethodTrainer):
    """Distil ``teacher`` (a trained :class:`MaskedDiffusionLM`) into a few-step student.

    The model comes first, the target second, as everywhere in divmin: ``DiDiTrainer(student,
    teacher=teacher, config=config)``, or ``DiDiTrainer(teacher=teacher)`` to start the student
    as a copy of the teacher.

    Args:
        student: the start point of the student (default None: a copy of the teacher).
        teacher: the frozen teacher MDLM (keyword).
        config: :class:`DiDiConfig` (keyword; None: defaults).
        judge: optional exact ``log_prob(seqs)`` (e.g. :class:`divmin.data.MarkovLanguage`) for the
            evaluation's generative perplexity.
        discriminator: its start point (default: a :class:`MaskedDiscriminator` on a copy of the
            teacher's network).
        target: (N, L) teacher samples to use as the target P (default: ``teacher_pool`` samples
            drawn with ``teacher_nfe`` steps when training starts), e.g. shared by several runs.

    After ``fit()``: ``student``, ``student_ema`` and ``discriminator`` are the trained modules;
    ``sample(n, nfe=..., guided=...)`` draws from the EMA student.
    """

    trained_models = {"student": "student", "student_ema": "student_ema", "discriminator": "discriminator"}

    def __init__(self, student: MaskedDiffusionLM | None = None, *, teacher: MaskedDiffusionLM,
                 config: DiDiConfig | None = None, judge: Any = None, discriminator: torch.nn.Module | None = None,
                 target: Tensor | None = None) -> None:
        c = self.use_config(config, DiDiConfig)
        if not isinstance(teacher, MaskedDiffusionLM):
            raise TypeError(f"`teacher` must be a MaskedDiffusionLM, got {type(teacher).__name__}")
        if student is not None and (not isinstance(student, MaskedDiffusionLM) or student.vocab_size !=
                                    teacher.vocab_size or student.length != teacher.length):
            raise ValueError("`student` must be a MaskedDiffusionLM with the teacher's vocab_size and length")
        if judge is not None and not callable(getattr(judge, "log_prob", None)):
            raise TypeError("`judge` must have a log_prob(seqs) method")
        self.teacher = teacher.requires_grad_(False)
        self.student = copy.deepcopy(teacher).requires_grad_(True) if student is None else student
        self.student_ema: MaskedDiffusionLM | None = None
        self.discriminator = discriminator if discriminator is not None else MaskedDiscriminator(
            teacher.net, trainable_blocks=c.disc_trainable_blocks, hidden=c.disc_hidden)
        self.judge = judge
        self.target = None if target is None else check_token_ids(target, "target", vocab_size=teacher.vocab_size,
                                                                  length=teacher.length)
        self.ratio_estimator = LogRatioEstimator(logit_clamp=c.logit_clamp, ratio_clamp=None, ratio_ema=0.0)
        self.baseline = MovingBaseline(c.baseline_decay)

    def evaluates(self) -> bool:
        return self.judge is not None

    def make_task(self) -> DiDiInstruct:
        return DiDiInstruct(config=self.config, student=self.student, teacher=self.teacher,
                            discriminator=self.discriminator, ratio_estimator=self.ratio_estimator,
                            baseline=self.baseline, judge=self.judge, target=self.target)

    @torch.no_grad()
    def sample(self, n: int, *, nfe: int, guided: bool = False, ema: bool = True,
               generator: torch.Generator | None = None) -> Tensor:
        """(n, L) samples of the (EMA) student in ``nfe`` steps; ``guided``: the reward-guided sampler."""
        model = self.student_ema if ema and self.student_ema is not None else self.student
        device = next(model.parameters()).device
        if not guided:
            return model.sample(n, nfe=nfe, generator=generator)
        c = self.config
        return guided_sample(model, self.discriminator.eval(), n, model.length, mask_id=model.mask_id, nfe=nfe,
                             guidance_scale=c.guidance_scale, switch=c.guide_switch, best_of=c.best_of,
                             generator=generator, device=device).tokens


class DiDiInstruct:
    """The engine task behind :class:`DiDiTrainer` (models "student", "student_ema", "discriminator", "teacher")."""

    static_models = ("teacher",)
    find_unused_parameters = True  # the discriminator's frozen trunk blocks and the unused denoiser head

    def __init__(self, *, config: DiDiConfig, student: MaskedDiffusionLM, teacher: MaskedDiffusionLM,
                 discriminator: torch.nn.Module, ratio_estimator: LogRatioEstimator, baseline: MovingBaseline,
                 judge: Any = None, target: Tensor | None = None) -> None:
        self.c, self.student, self.teacher, self.discriminator = config, student, teacher, discriminator
        self.ratio_estimator, self.baseline, self.judge = ratio_estimator, baseline, judge
        self.pool: Tensor | None = target

    def models(self) -> dict[str, torch.nn.Module]:
        return {"student": self.student, "student_ema": ema_copy(self.student),
                "discriminator": self.discriminator, "teacher": self.teacher}

    def optimizers(self, models: dict[str, torch.nn.Module]) -> dict[str, torch.optim.Optimizer]:
        c = self.c
        disc = [p for p in models["discriminator"].parameters() if p.requires_grad]
        return {"student": torch.optim.AdamW(models["student"].parameters(), lr=c.lr_student, betas=c.adam_betas),
                "discriminator": torch.optim.AdamW(disc, lr=c.lr_discriminator, betas=c.adam_betas)}

    def state_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline.value}  # None before the first update

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.baseline.value = state["baseline"]

    # ----------------------------------------------------------------- helpers
    def _teacher_pool(self, ctx: StepContext) -> Tensor:
        """The target's samples, drawn once from a generator seeded by the engine seed (identical on resume)."""
        if self.pool is None:
            teacher, c = ctx.unwrap("teacher"), self.c
            gen = torch.Generator(ctx.device).manual_seed(ctx.config.seed + 7919)
            self.pool = mdlm_sample(teacher, c.teacher_pool, teacher.length, mask_id=teacher.mask_id,
                                    nfe=c.teacher_nfe, generator=gen, device=ctx.device).tokens
        return self.pool.to(ctx.device)

    def _times(self, ctx: StepContext) -> list[float]:
        if not self.c.intermediate_matching:
            return [1.0, 0.0]
        u = float(torch.rand((), generator=ctx.cpu_generator))
        tau = float(betaincinv(*self.c.tau_beta, u))
        return [1.0, min(max(tau, 1e-3), 1.0 - 1e-3), 0.0]

    def _noise_times(self, n: int, ctx: StepContext) -> Tensor:
        """(n,) stratified times in [t_min, t_max): where the integral is taken."""
        c = self.c
        return c.t_min + (c.t_max - c.t_min) * sample_times(n, generator=ctx.generator, device=ctx.device, t_min=0.0)

    def _paths(self, ctx: StepContext, times: list[float]) -> list[Tensor]:
        student = ctx.unwrap("student")
        with torch.no_grad():
            out = mdlm_sample(student, self.c.batch_size, student.length, mask_id=student.mask_id, times=times,
                              generator=ctx.generator, device=ctx.device, cache=False, keep_path=True)
        start = torch.full_like(out.tokens, student.mask_id)
        return [start] + [z for _, z in out.path]

    def _disc_step(self, ctx: StepContext, fake_x0: Tensor) -> dict[str, Tensor]:
        c, student = self.c, ctx.unwrap("student")
        pool = self._teacher_pool(ctx)
        real_x0 = pool[torch.randint(pool.shape[0], (fake_x0.shape[0],), generator=ctx.cpu_generator).to(pool.device)]
        x0 = torch.cat([fake_x0, real_x0])
        t = self._noise_times(x0.shape[0], ctx)
        logits = ctx.models["discriminator"](student.noise(x0, t, ctx.generator), t)
        n = fake_x0.shape[0]
        loss = logistic_discriminator_loss(logits[:n], logits[n:], label_smoothing=c.label_smoothing)
        ctx.update("discriminator", loss)
        acc = 0.5 * ((logits[n:] > 0).float().mean() + (logits[:n] < 0).float().mean())
        return {"disc/loss": loss.detach(), "disc/acc": acc}

    def _student_step(self, ctx: StepContext, states: list[Tensor], times: list[float]) -> dict[str, Tensor]:
        c, student = self.c, ctx.unwrap("student")
        x0, g = states[-1], c.group_size
        t = self._noise_times(x0.shape[0] // g, ctx).repeat_interleave(g)
        with torch.no_grad():
            logit = ctx.unwrap("discriminator")(student.noise(x0, t, ctx.generator), t)
            log_r = self.ratio_estimator(logit)
        logq = path_log_prob(ctx.models["student"], states, times, mask_id=student.mask_id)
        if c.grouped_normalization:
            loss, rewards = integral_policy_loss(logq, log_r, divergence=c.divergence, group_size=g,
                                                 clip=c.reward_clip)
        else:
            loss, rewards = integral_policy_loss(logq, log_r, divergence=c.divergence, baseline=self.baseline())
            self.baseline.update(_Rewards(rewards))
        ctx.update("student", loss)
        ema_update(ctx.unwrap("student_ema"), ctx.unwrap("student"), decay=c.ema_decay)
        return {"student/reward": rewards.mean(), "student/log_r": log_r.mean(), "student/logq": logq.detach().mean()}

    def train_step(self, batch: Any, ctx: StepContext) -> StepOutput:
        metrics: dict[str, Tensor] = {}
        for _ in range(self.c.disc_warmup if ctx.step == 0 else 0):  # a discriminator worth listening to first
            metrics = self._disc_step(ctx, self._paths(ctx, self._times(ctx))[-1])
        times = self._times(ctx)
        states = self._paths(ctx, times)
        for _ in range(self.c.disc_steps):
            metrics = self._disc_step(ctx, states[-1])
        return StepOutput(loss=None, metrics={**metrics, **self._student_step(ctx, states, times)})

    @torch.no_grad()
    def evaluate(self, ctx: StepContext) -> dict[str, Tensor]:
        model, c = ctx.unwrap("student_ema"), self.c
        x = model.sample(c.eval_samples, nfe=c.eval_nfe, generator=ctx.generator).cpu()
        return {"gen_ppl": torch.tensor(generative_perplexity(x, self.judge)),
                "entropy": torch.tensor(unigram_entropy(x, model.vocab_size))}


@dataclasses.dataclass
class _Rewards:
    """What MovingBaseline.update reads: weights and pseudo-rewards (-g) of a batch."""

    pseudo_rewards: Tensor

    @property
    def weights(self) -> Tensor:
        return torch.ones_like(self.pseudo_rewards)
