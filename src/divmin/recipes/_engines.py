"""Shared pieces of the recipes' configs and training runs: the engine defaults and the nested-config checks.

* :func:`recipe_engine`: a recipe's training loop (a progress bar, no TensorBoard: the recipe plots its own).
* :func:`unclipped_engine`: the engine of a recipe that trains many independent
  models (one per divergence, beta or seed) as one parameter set under one optimizer.
* :func:`fit_task`: one engine run of a recipe's own task, checkpointed into ``--out``.
* :func:`refuse_owned`: a recipe config nests its method's config (``fdpo: FDPOConfig``...);
  a few of the nested fields are set by the recipe for each run (the divergence from
  the recipe's list, the seed from its seeds...). A value given for one of those
  would be silently replaced, so it is refused, naming the recipe field to set instead;
  :func:`check_recipe_kd` does the same for a nested KD config, and checks its task.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..engine import EngineConfig, Trainer, is_default
from ._runs import resumable, run_engine

__all__ = ["check_recipe_kd", "fit_task", "recipe_engine", "refuse_owned", "unclipped_engine"]


def recipe_engine(max_steps: int, *, max_grad_norm: float | None = None, log_every: int = 100) -> EngineConfig:
    """A recipe's training loop: ``max_steps`` steps, a progress bar, no TensorBoard (the recipe plots its own)."""
    return EngineConfig(max_steps=max_steps, log_every=log_every, progress=True, tensorboard=False,
                        max_grad_norm=max_grad_norm)


def unclipped_engine(max_steps: int, log_every: int, **changes: Any) -> EngineConfig:
    """Engine settings without gradient clipping: the recipe's models are independent rows of one
    optimizer, and a clip of their global norm would couple them."""
    return EngineConfig(max_steps=max_steps, log_every=log_every, max_grad_norm=None, progress=True, **changes)


def fit_task(task: Any, engine: EngineConfig, out_dir: str | Path, *, resume: bool) -> Trainer:
    """Train ``task`` with ``engine`` in ``out_dir`` (resumed from its checkpoint when ``resume``); the trainer."""
    engine = run_engine(engine, out_dir)
    trainer = Trainer(task, engine)
    trainer.fit(resume=resumable(engine, resume))
    return trainer


def _default(config_cls: type, key: str) -> Any:
    """The default value of dotted ``key`` of ``config_cls`` (through its nested configs' default factories)."""
    head, *rest = key.split(".")
    field = {f.name: f for f in dataclasses.fields(config_cls)}[head]
    value = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
    for part in rest:
        value = getattr(value, part)
    return value


def refuse_owned(config: Any, owned: Mapping[str, str]) -> None:
    """Raise ValueError if a nested key the recipe sets per run was changed from its default.

    ``owned``: dotted key (``"fdpo.divergence"``) -> the recipe field that sets it (``"divergences"``).
    """
    for key, source in owned.items():
        value = config
        for part in key.split("."):
            value = getattr(value, part)
        if value != _default(type(config), key):
            raise ValueError(f"`{key}` is set by the recipe for each run (from `{source}`); set `{source}` "
                             f"instead, got {key}={value!r}")


def check_recipe_kd(kd: Any, *, by: str, task: str) -> None:
    """A recipe's nested ``kd`` (a DistillConfig) may not set what the recipe sets per run (its divergence)."""
    if not is_default(kd, "divergence"):
        raise ValueError(f"`kd.divergence` is set per run by `{by}`; leave it at its default")
    if kd.task != task:
        raise ValueError(f"`kd.task` must be {task!r} for this recipe's models, got {kd.task!r}")
