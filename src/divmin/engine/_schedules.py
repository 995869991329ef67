"""Learning-rate schedules: a registry of pure functions of the engine step.

A schedule maps ``(step, warmup_steps, max_steps)`` to a multiplier of each
param group's initial lr. ``step`` is the 0-based index of the engine step
whose update uses the lr. Because the multiplier depends on the engine step
only (not on how many times an optimizer stepped), a critic updated 4x per
generator update follows the same curve as the generator, and resuming needs
no scheduler state.

Warmup (shared by all built-ins): for ``step < warmup_steps`` the multiplier
is ``(step + 1) / warmup_steps``, so the first update already moves and the
last warmup step reaches the full lr. After warmup, with
``p = (step - warmup_steps) / (max_steps - warmup_steps)`` in [0, 1):

- ``constant``: 1
- ``linear``:   1 - p           (reaches 1/(max_steps - warmup) at the last step, never 0)
- ``cosine``:   (1 + cos(pi p)) / 2
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ..registry import Registry

Schedule = Callable[[int, int, int], float]

SCHEDULES: Registry[Schedule] = Registry("schedule")


def register_schedule(name: str) -> Callable[[Schedule], Schedule]:
    """Decorator adding ``fn(step, warmup_steps, max_steps) -> multiplier`` under ``name``."""
    return SCHEDULES.register(name)


def available_schedules() -> tuple[str, ...]:
    """Names accepted by ``EngineConfig.lr_schedule``."""
    return tuple(SCHEDULES.names())


def lr_multiplier(name: str, step: int, warmup_steps: int, max_steps: int) -> float:
    """Multiplier of the initial lr at 0-based engine ``step`` for schedule ``name``."""
    try:
        fn = SCHEDULES.get(name)
    except ValueError as err:
        raise ValueError(f"lr_schedule: {err}") from None
    return float(fn(step, warmup_steps, max_steps))


def _progress(step: int, warmup_steps: int, max_steps: int) -> float:
    """Fraction p in [0, 1] of the post-warmup phase completed before ``step``."""
    span = max(1, max_steps - warmup_steps)
    return min(1.0, max(0.0, (step - warmup_steps) / span))


@register_schedule("constant")
def _constant(step: int, warmup_steps: int, max_steps: int) -> float:
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return 1.0


@register_schedule("linear")
def _linear(step: int, warmup_steps: int, max_steps: int) -> float:
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return 1.0 - _progress(step, warmup_steps, max_steps)


@register_schedule("cosine")
def _cosine(step: int, warmup_steps: int, max_steps: int) -> float:
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return 0.5 * (1.0 + math.cos(math.pi * _progress(step, warmup_steps, max_steps)))
