"""Engine defaults shared by the recipes' method configs (one factory instead of one per recipe)."""

from __future__ import annotations

from ..engine import EngineConfig

__all__ = ["recipe_engine"]


def recipe_engine(max_steps: int, *, max_grad_norm: float | None = None, log_every: int = 100) -> EngineConfig:
    """A recipe's training loop: ``max_steps`` steps, a progress bar, no TensorBoard (the recipe plots its own)."""
    return EngineConfig(max_steps=max_steps, log_every=log_every, progress=True, tensorboard=False,
                        max_grad_norm=max_grad_norm)
