"""`RobustTrainer`: standard, PGD-AT, TRADES or WEAT training of a classifier on the shared engine.

Per micro-batch the loss is :func:`~divmin.robust.robust_loss` under ``config.objective``
(attacks drawn from the engine's ``ctx.generator``, so runs resume exactly); devices,
mixed precision, accumulation, clipping, schedules, logging and checkpoints are the
engine's (``RobustConfig.engine``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ..divergences import Divergence
from ..engine import (Bool, EngineConfig, Instance, Int, IsDivergence, MethodTrainer, Number, OneOf, StepContext,
                      StepOutput, Tuple, trainable_adamw, validate)
from ._attacks import NORMS
from ._evaluate import robustness_metrics
from ._objectives import OBJECTIVES, AttackSettings, robust_loss

__all__ = ["RobustConfig", "RobustTrainer"]


def _default_engine() -> EngineConfig:
    return EngineConfig(max_steps=1000, log_every=10)


@dataclasses.dataclass
class RobustConfig:
    """Settings of :class:`RobustTrainer`; every field is checked on construction.

    >>> RobustConfig(objective="fgsm")
    Traceback (most recent call last):
    ...
    ValueError: `objective` must be one of 'standard', 'pgd-at', 'trades', 'weat', got 'fgsm'
    """

    objective: str = "weat"  # a name in OBJECTIVES: "standard", "pgd-at", "trades", "weat"
    eps: float = 8 / 255  # radius of the threat ball (the paper's CIFAR setting)
    steps: int = 10  # training attack steps
    step_size: float | None = None  # per-step alpha (None: 2.5 eps / steps)
    norm: str = "linf"  # "linf" or "l2"
    beta: float = 6.0  # weight of TRADES' / WEAT's divergence term
    divergence: str | Divergence = "forward_kl"  # D(p(x) || p(x')) of TRADES and WEAT: any f member
    weat_normalize: bool = False  # WEAT: divide the weights by their batch mean (the paper: raw weights)
    bounds: tuple[float, float] | None = (0.0, 1.0)  # input range
    eval_steps: int = 20  # PGD steps of evaluate()
    lr: float = 1e-3  # AdamW learning rate
    weight_decay: float = 0.0  # AdamW weight decay
    batch_size: int = 128  # examples per micro-batch
    eval_batch_size: int = 512  # examples per attack in evaluate()
    engine: EngineConfig = dataclasses.field(default_factory=_default_engine)  # training loop settings

    CHECKS = dict(  # one per field: divmin.engine.validate
        objective=OneOf(OBJECTIVES), eps=Number(ge=0), steps=Int(ge=1), step_size=Number(ge=0, optional=True),
        norm=OneOf(NORMS), beta=Number(ge=0), divergence=IsDivergence(), weat_normalize=Bool(),
        bounds=Tuple((Number(), Number()), optional=True), eval_steps=Int(ge=1), lr=Number(gt=0),
        weight_decay=Number(ge=0), batch_size=Int(ge=1), eval_batch_size=Int(ge=1), engine=Instance(EngineConfig),
    )

    def __post_init__(self) -> None:
        validate(self)
        if self.bounds is not None and not self.bounds[0] < self.bounds[1]:
            raise ValueError(f"`bounds` must be (lo, hi) with lo < hi, got {self.bounds!r}")

    def settings(self, generator: torch.Generator | None = None) -> AttackSettings:
        """The :class:`AttackSettings` of training."""
        return AttackSettings(eps=self.eps, steps=self.steps, step_size=self.step_size, norm=self.norm,
                              beta=self.beta, divergence=self.divergence, weat_normalize=self.weat_normalize,
                              bounds=None if self.bounds is None else tuple(self.bounds), generator=generator)


def _xy(batch: Any) -> tuple[Tensor, Tensor]:
    if isinstance(batch, dict):
        return batch["x"], batch["labels"]
    return batch[0], batch[1]


class _RobustTask:
    def __init__(self, owner: "RobustTrainer") -> None:
        self.o = owner

    def models(self) -> dict[str, nn.Module]:
        return {"classifier": self.o.model}

    def optimizers(self, models: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        c = self.o.config
        return {"classifier": trainable_adamw(models["classifier"], lr=c.lr, weight_decay=c.weight_decay)}

    def batches(self, ctx: StepContext) -> DataLoader:
        return DataLoader(self.o.train_dataset, batch_size=self.o.config.batch_size, shuffle=True)

    def train_step(self, batch: Any, ctx: StepContext) -> StepOutput:
        x, y = _xy(batch)
        settings = self.o.config.settings(ctx.generator)
        # as the classifier's forward, so that DDP sees one forward per backward
        parts = ctx.call("classifier", robust_loss, x, y, objective=self.o.config.objective, settings=settings)
        return StepOutput(loss=parts["loss"], metrics={k: v.detach() for k, v in parts.items() if k != "loss"})

    def evaluate(self, ctx: StepContext) -> dict[str, float]:
        return self.o.evaluate(generator=ctx.generator)


class RobustTrainer(MethodTrainer):
    """Train ``model`` (a classifier) under ``config.objective`` on ``train_dataset``.

    Args:
        model: ``(B, ...) -> (B, C)`` logits; trained in place (optimizer ``"classifier"``).
        train_dataset / eval_dataset: items ``(x, label)`` or ``{"x": ..., "labels": ...}``,
            inputs in ``config.bounds``.
        config: a :class:`RobustConfig`.

    ``train(resume=False)`` runs the engine; ``evaluate(dataset=None)`` returns
    :func:`robustness_metrics` (clean and PGD-``eval_steps`` accuracy, energies).
    """

    trained_models = {"classifier": "model"}

    def __init__(self, model: nn.Module, train_dataset: Any, *, eval_dataset: Any = None,
                 config: RobustConfig | None = None) -> None:
        self.use_config(config, RobustConfig)
        if not isinstance(model, nn.Module):
            raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
        if train_dataset is not None and not hasattr(train_dataset, "__len__"):
            raise TypeError(f"`train_dataset` must be a sized dataset, got {type(train_dataset).__name__}")
        if train_dataset is None or len(train_dataset) == 0:
            raise ValueError("`train_dataset` must hold at least one example")
        self.model, self.train_dataset, self.eval_dataset = model, train_dataset, eval_dataset

    def make_task(self) -> _RobustTask:
        return _RobustTask(self)

    def evaluates(self) -> bool:
        return self.eval_dataset is not None and len(self.eval_dataset) > 0

    def evaluate(self, dataset: Any = None, *, generator: torch.Generator | None = None) -> dict[str, float]:
        """:func:`robustness_metrics` of the model on ``dataset`` (default: the eval split)."""
        data = self.eval_dataset if dataset is None else dataset
        if data is None or len(data) == 0:
            raise ValueError("no evaluation examples: pass `dataset` or an `eval_dataset`")
        x, y = _xy(next(iter(DataLoader(data, batch_size=len(data)))))
        model = getattr(self.model, "module", self.model)
        device = next(model.parameters()).device
        c = self.config
        return robustness_metrics(model, x.to(device), y.to(device), eps=c.eps, steps=c.eval_steps,
                                  step_size=None, norm=c.norm, bounds=c.settings().bounds,
                                  batch_size=c.eval_batch_size, generator=generator)
