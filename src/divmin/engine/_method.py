"""`MethodTrainer`: what every thin method trainer shares (``fit``, ``engine``, writing models back).

A method is three pieces: a config dataclass (its knobs + ``engine: EngineConfig``), a task (the
engine `Task`: models, optimizers, one step, evaluation) and a thin trainer (a `MethodTrainer`
subclass: checks its inputs, prepares data, builds the task, exposes the trained models).

**The task never holds its trainer.** ``make_task()`` passes the task everything it reads, as
keyword arguments: the config, the modules, the prepared data, plain callables (a loss, a
collator, a precompute function) and the *state objects* the trainer keeps across ``fit`` calls
(a `LogRatioEstimator`, a `MovingBaseline`, a small mutable holder for a cache or a counter).
What the task changes and the trainer shows afterwards lives in those state objects (read through
a trainer property) or comes back through ``trained_models``; the task writes nothing else.
So a task can be built, stepped and tested without a trainer, and no attribute is read through
a back-pointer.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._task import Task, TrainResult
from ._trainer import Trainer

__all__ = ["MethodTrainer", "trainable_adamw"]


def trainable_adamw(model: nn.Module, *, lr: float, weight_decay: float = 0.0,
                    argname: str = "model") -> torch.optim.AdamW:
    """AdamW over the parameters of ``model`` that require a gradient (frozen ones, e.g. a
    LoRA base, stay out); ValueError naming ``argname`` when there is none.

    >>> opt = trainable_adamw(nn.Linear(2, 1).requires_grad_(False), lr=1e-3)
    Traceback (most recent call last):
    ...
    ValueError: `model` has no parameter with requires_grad=True
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"`{argname}` has no parameter with requires_grad=True")
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


class MethodTrainer:
    """Base of the method trainers (``FDPOTrainer``, ``FDPGTrainer``, ``DistillTrainer``, ``FDistillTrainer``).

    A subclass holds ``config`` (a config dataclass with an ``engine: EngineConfig``
    field), implements ``make_task()`` (the engine `Task`) and lists in
    ``trained_models`` which engine models are written back to which of its
    attributes after training, e.g. ``{"policy": "model"}``. It may override
    ``evaluates()``: when True and ``engine.eval_every`` is None, the engine
    evaluates once, at the last step.

    ``fit(resume=False)`` runs the engine and returns its `TrainResult`;
    ``engine`` is the `Trainer` of the last ``fit`` call (None before). ``train`` is the former
    name of ``fit`` (deprecated); a trainer that is also an ``nn.Module`` keeps ``nn.Module.train``.
    Every subclass takes ``config`` as a keyword argument.
    """

    trained_models: Mapping[str, str] = {}  # engine model name -> attribute set to the trained model
    config: Any
    engine: Trainer | None = None

    def use_config(self, config: Any, cls: type) -> Any:
        """Set ``self.config`` to ``config`` (None: ``cls()``), refusing any other type; return it."""
        config = cls() if config is None else config
        if not isinstance(config, cls):
            raise TypeError(f"`config` must be a {cls.__name__}, got {type(config).__name__}")
        self.config = config
        return config

    def make_task(self) -> Task:
        """The engine task, built with everything it reads (no back-pointer); called once per ``fit``."""
        raise NotImplementedError

    def evaluates(self) -> bool:
        """Whether the task has something to evaluate (held-out data); default False."""
        return False

    def fit(self, resume: bool | str | Path = False) -> TrainResult:
        """Run ``config.engine.max_steps`` engine steps (``resume`` as in `Trainer.fit`); the trained
        (unwrapped) models replace the attributes named in ``trained_models``."""
        engine = self.config.engine
        if self.evaluates() and engine.eval_every is None:
            engine = dataclasses.replace(engine, eval_every=engine.max_steps)
        self.engine = Trainer(self.make_task(), engine)
        result = self.engine.fit(resume=resume)
        for model, attr in self.trained_models.items():
            setattr(self, attr, self.engine.models[model])
        return result

    def train(self, resume: bool | str | Path = False) -> TrainResult:
        """Deprecated former name of :meth:`fit` (DeprecationWarning)."""
        warnings.warn(f"{type(self).__name__}.train() is deprecated; use {type(self).__name__}.fit()",
                      DeprecationWarning, stacklevel=2)
        return self.fit(resume)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # the deprecated alias must never shadow nn.Module.train(mode) on a trainer that is also a module
        if issubclass(cls, nn.Module) and cls.train is MethodTrainer.train:
            cls.train = nn.Module.train
