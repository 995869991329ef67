"""`DiDiConfig`: the settings of DiDi-Instruct (:class:`divmin.diffusion.DiDiTrainer`), checked on construction.

Authors' settings where the paper gives them: a group of 4 samples, discriminator lr 1e-5 with the
teacher's last blocks unfrozen, label smoothing 0.1, guidance scale 30 to 40, 2-step student paths.
The rest are ours (the recipe ``didi-synthetic`` overrides the learning rates for its tiny models).
"""

from __future__ import annotations

import dataclasses

from ..engine import Bool, EngineConfig, Instance, Int, IsDivergence, Number, Tuple, validate

__all__ = ["DiDiConfig"]


def _default_engine() -> EngineConfig:
    return EngineConfig(max_steps=1000, log_every=100, max_grad_norm=1.0, progress=False, tensorboard=False)


@dataclasses.dataclass
class DiDiConfig:
    """Settings of :class:`DiDiTrainer`; every field is checked on construction."""

    divergence: str = "integral_reverse_kl"  # a registry member of kind "integral" (the paper: integral KL(Q_t||P_t))
    batch_size: int = 64  # student paths per step (a multiple of group_size)
    group_size: int = 4  # G samples per group; a group shares its diffusion time t
    grouped_normalization: bool = True  # standardise rewards within groups (False: moving-average baseline)
    reward_clip: float = 3.0  # clip of the standardised rewards
    intermediate_matching: bool = True  # 2-step student paths 1 -> tau -> 0 (False: one step 1 -> 0)
    tau_beta: tuple[float, float] = (2.0, 2.0)  # tau ~ Beta(a, b), one draw per step
    lr_student: float = 1e-5  # AdamW learning rate of the student
    lr_discriminator: float = 1e-5  # AdamW learning rate of the discriminator (authors: 1e-5)
    adam_betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas of both optimizers
    disc_trainable_blocks: int = 1  # last teacher blocks trained in the discriminator's trunk
    disc_hidden: int = 64  # width of the discriminator's head
    disc_steps: int = 1  # discriminator updates per student update
    disc_warmup: int = 0  # extra discriminator updates (fresh student samples each) before the first student update
    label_smoothing: float = 0.1  # of the discriminator's logistic loss (authors: 0.1)
    logit_clamp: float = 10.0  # the discriminator's logit is clamped to +-this before it becomes a reward
    t_min: float = 1e-3  # noise times t ~ U(t_min, t_max) for the discriminator and the reward
    t_max: float = 1.0  # (the integral over [t_min, t_max]: near t = 1 everything is masked and nothing differs)
    baseline_decay: float = 0.9  # moving-average baseline (without grouped normalisation)
    teacher_nfe: int = 64  # sampling steps of the teacher's samples (the target P)
    teacher_pool: int = 4096  # teacher samples drawn once before training, reused as the target
    ema_decay: float = 0.99  # the student's EMA, the model that samples
    guidance_scale: float = 30.0  # gradient tilting of the guided sampler (authors: 30 to 40)
    guide_switch: float = 0.5  # guided sampler: tilting while t > this, best-of-M at later steps
    best_of: int = 4  # M candidates per late step of the guided sampler (1: none)
    eval_samples: int = 256  # samples per evaluation (needs a judge)
    eval_nfe: int = 4  # student sampling steps at evaluation
    engine: EngineConfig = dataclasses.field(default_factory=_default_engine)  # max_steps = student updates

    CHECKS = dict(  # one per field: divmin.engine.validate
        divergence=IsDivergence(kinds=("integral",)), batch_size=Int(ge=2), group_size=Int(ge=2),
        grouped_normalization=Bool(), reward_clip=Number(gt=0), intermediate_matching=Bool(),
        tau_beta=Tuple((Number(gt=0), Number(gt=0))), lr_student=Number(gt=0), lr_discriminator=Number(gt=0),
        adam_betas=Tuple((Number(ge=0, lt=1), Number(ge=0, lt=1))), disc_trainable_blocks=Int(ge=0),
        disc_hidden=Int(ge=1), disc_steps=Int(ge=0), disc_warmup=Int(ge=0), label_smoothing=Number(ge=0, lt=0.5),
        logit_clamp=Number(gt=0), t_min=Number(ge=0, lt=1), t_max=Number(gt=0, le=1), baseline_decay=Number(ge=0, lt=1),
        teacher_nfe=Int(ge=1), teacher_pool=Int(ge=1), ema_decay=Number(ge=0, lt=1), guidance_scale=Number(ge=0),
        guide_switch=Number(ge=0, le=1), best_of=Int(ge=1), eval_samples=Int(ge=1), eval_nfe=Int(ge=1),
        engine=Instance(EngineConfig),
    )

    def __post_init__(self) -> None:
        validate(self)
        if self.t_max <= self.t_min:
            raise ValueError(f"`t_max` ({self.t_max}) must be > `t_min` ({self.t_min})")
        if self.batch_size % self.group_size:
            raise ValueError(f"`batch_size` ({self.batch_size}) must be a multiple of `group_size` "
                             f"({self.group_size})")
