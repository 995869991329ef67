"""`RobustTrainer`: standard, PGD-AT, TRADES or WEAT training of a classifier on the shared engine.

Per micro-batch the loss is :func:`~divmin.robust.robust_loss` under ``config.objective``
(attacks drawn from the engine's ``ctx.generator``, so runs resume exactly); devices,
mixed precision, accumulation, clipping, schedules, logging and checkpoints are the
engine's (``WEATConfig.engine``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ..engine import (EngineConfig, Instance, Int, MethodTrainer, Number, OneOf, StepContext, StepOutput,
                      trainable_adamw, validate)
from ._evaluate import robustness_metrics
from ._objectives import OBJECTIVES, AttackSettings, robust_loss

__all__ = ["RobustTrainer", "WEATConfig"]


def _default_engine() -> EngineConfig:
    return EngineConfig(max_steps=1000, log_every=10)


@dataclasses.dataclass
class WEATConfig:
    """Settings of :class:`RobustTrainer` (standard, PGD-AT, TRADES or WEAT training); every field is
    checked on construction. The attack and the regulariser of training are one nested
    :class:`AttackSettings` (its ``generator`` stays None: training draws from the engine's).

    >>> WEATConfig(objective="fgsm")
    Traceback (most recent call last):
    ...
    ValueError: `objective` must be one of 'pgd-at', 'standard', 'trades', 'weat', got 'fgsm'
    >>> WEATConfig(attack=AttackSettings(eps=0.1, steps=3)).attack.eps
    0.1
    """

    objective: str = "weat"  # a name in OBJECTIVES: "standard", "pgd-at", "trades", "weat"
    attack: AttackSettings = dataclasses.field(default_factory=AttackSettings)  # training attack, beta, divergence, bounds
    eval_steps: int = 20  # PGD steps of evaluate()
    lr: float = 1e-3  # AdamW learning rate
    weight_decay: float = 0.0  # AdamW weight decay
    batch_size: int = 128  # examples per micro-batch
    eval_batch_size: int = 512  # examples per attack in evaluate()
    engine: EngineConfig = dataclasses.field(default_factory=_default_engine)  # training loop settings

    CHECKS = dict(  # one per field: divmin.engine.validate
        objective=OneOf(OBJECTIVES), attack=Instance(AttackSettings), eval_steps=Int(ge=1), lr=Number(gt=0),
        weight_decay=Number(ge=0), batch_size=Int(ge=1), eval_batch_size=Int(ge=1), engine=Instance(EngineConfig),
    )

    def __post_init__(self) -> None:
        validate(self)
        if self.attack.generator is not None:
            raise ValueError("`attack.generator` must be None: training attacks draw from the engine's generator")


def _xy(batch: Any) -> tuple[Tensor, Tensor]:
    if isinstance(batch, dict):
        return batch["x"], batch["labels"]
    return batch[0], batch[1]


def _evaluate(model: nn.Module, data: Any, config: WEATConfig, generator: torch.Generator | None) -> dict[str, float]:
    """:func:`robustness_metrics` of ``model`` on all of ``data`` at the config's radius and ``eval_steps``."""
    x, y = _xy(next(iter(DataLoader(data, batch_size=len(data)))))
    model = getattr(model, "module", model)
    device = next(model.parameters()).device
    a = config.attack
    return robustness_metrics(model, x.to(device), y.to(device), eps=a.eps, steps=config.eval_steps,
                              step_size=None, norm=a.norm, bounds=a.bounds, batch_size=config.eval_batch_size,
                              generator=generator)


class _RobustTask:
    def __init__(self, *, config: WEATConfig, model: nn.Module, train_dataset: Any, eval_dataset: Any) -> None:
        self.c, self.model, self.train_dataset, self.eval_dataset = config, model, train_dataset, eval_dataset

    def models(self) -> dict[str, nn.Module]:
        return {"classifier": self.model}

    def optimizers(self, models: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        c = self.c
        return {"classifier": trainable_adamw(models["classifier"], lr=c.lr, weight_decay=c.weight_decay)}

    def batches(self, ctx: StepContext) -> DataLoader:
        return DataLoader(self.train_dataset, batch_size=self.c.batch_size, shuffle=True)

    def train_step(self, batch: Any, ctx: StepContext) -> StepOutput:
        x, y = _xy(batch)
        settings = dataclasses.replace(self.c.attack, generator=ctx.generator)
        # as the classifier's forward, so that DDP sees one forward per backward
        parts = ctx.call("classifier", robust_loss, x, y, objective=self.c.objective, settings=settings)
        return StepOutput(loss=parts["loss"], metrics={k: v.detach() for k, v in parts.items() if k != "loss"})

    def evaluate(self, ctx: StepContext) -> dict[str, float]:
        return _evaluate(self.model, self.eval_dataset, self.c, ctx.generator)


class RobustTrainer(MethodTrainer):
    """Train ``model`` (a classifier) under ``config.objective`` on ``train_dataset``.

    Args:
        model: ``(B, ...) -> (B, C)`` logits; trained in place (optimizer ``"classifier"``).
        train_dataset / eval_dataset: items ``(x, label)`` or ``{"x": ..., "labels": ...}``,
            inputs in ``config.attack.bounds``.
        config: a :class:`WEATConfig` (keyword; None: defaults).

    ``fit(resume=False)`` runs the engine; ``evaluate(dataset=None)`` returns
    :func:`robustness_metrics` (clean and PGD-``eval_steps`` accuracy, energies).
    """

    trained_models = {"classifier": "model"}

    def __init__(self, model: nn.Module, train_dataset: Any, *, eval_dataset: Any = None,
                 config: WEATConfig | None = None) -> None:
        self.use_config(config, WEATConfig)
        if not isinstance(model, nn.Module):
            raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
        if train_dataset is not None and not hasattr(train_dataset, "__len__"):
            raise TypeError(f"`train_dataset` must be a sized dataset, got {type(train_dataset).__name__}")
        if train_dataset is None or len(train_dataset) == 0:
            raise ValueError("`train_dataset` must hold at least one example")
        self.model, self.train_dataset, self.eval_dataset = model, train_dataset, eval_dataset

    def make_task(self) -> _RobustTask:
        return _RobustTask(config=self.config, model=self.model, train_dataset=self.train_dataset,
                           eval_dataset=self.eval_dataset)

    def evaluates(self) -> bool:
        return self.eval_dataset is not None and len(self.eval_dataset) > 0

    def evaluate(self, dataset: Any = None, *, generator: torch.Generator | None = None) -> dict[str, float]:
        """:func:`robustness_metrics` of the model on ``dataset`` (default: the eval split)."""
        data = self.eval_dataset if dataset is None else dataset
        if data is None or len(data) == 0:
            raise ValueError("no evaluation examples: pass `dataset` or an `eval_dataset`")
        return _evaluate(self.model, data, self.config, generator)
