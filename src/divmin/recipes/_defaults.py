"""What the recipes' nested method configs share: the engine defaults and the check of a nested KD config."""

from __future__ import annotations

from typing import Any

from ..engine import EngineConfig, is_default

__all__ = ["check_recipe_kd", "recipe_engine"]


def recipe_engine(max_steps: int, *, max_grad_norm: float | None = None, log_every: int = 100) -> EngineConfig:
    """A recipe's training loop: ``max_steps`` steps, a progress bar, no TensorBoard (the recipe plots its own)."""
    return EngineConfig(max_steps=max_steps, log_every=log_every, progress=True, tensorboard=False,
                        max_grad_norm=max_grad_norm)


def check_recipe_kd(kd: Any, *, by: str, task: str) -> None:
    """A recipe's nested ``kd`` (a DistillConfig) may not set what the recipe sets per run (its divergence)."""
    if not is_default(kd, "divergence"):
        raise ValueError(f"`kd.divergence` is set per run by `{by}`; leave it at its default")
    if kd.task != task:
        raise ValueError(f"`kd.task` must be {task!r} for this recipe's models, got {kd.task!r}")
