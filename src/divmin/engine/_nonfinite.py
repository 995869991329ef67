"""The engine's guard against non-finite losses, gradients and weights.

A NaN or inf loss (a learning rate that diverges, a NaN weight, log of zero)
must never train on silently and end with exit 0. Every update checks the loss
it back-propagated and the gradient norm of the parameters it is about to
step; what happens on a bad update is the policy ``EngineConfig.on_nonfinite``:

- ``"raise"`` (default): the update is not applied and the run stops with a
  :class:`NonFiniteError` naming the step, the optimizer(s), the loss, the
  metrics the step logged and the last good checkpoint;
- ``"skip"``: the update is dropped (as AMP's grad scaler drops an overflowing
  step), counted in ``TrainResult.skipped_updates`` and in the logged metric
  ``skipped_updates``, with a warning; a run that skips ``MAX_CONSECUTIVE_SKIPS``
  updates of one optimizer in a row stops with the error, since it is no longer
  training.

A checkpoint is never written with non-finite weights (`check_finite_weights`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

NONFINITE_POLICIES = ("raise", "skip")
MAX_CONSECUTIVE_SKIPS = 100  # "skip" gives up after this many bad updates of one optimizer in a row


class NonFiniteError(FloatingPointError):
    """A training run met a NaN/inf loss, gradient or weight (see ``EngineConfig.on_nonfinite``)."""


def grad_norm(params: Iterable[torch.Tensor]) -> torch.Tensor | None:
    """The global L2 norm of the gradients of ``params`` (fp32 accumulation), None if none has a gradient."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return None
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))


def is_finite(value: torch.Tensor | float | None) -> bool:
    """True when ``value`` (a tensor of any shape, a number or None) holds no NaN or inf."""
    if value is None:
        return True
    if isinstance(value, torch.Tensor):
        return bool(torch.isfinite(value.detach()).all())
    return math.isfinite(float(value))


def describe_bad_update(step: int, names: list[str], loss: Any, norm: Any, metrics: Mapping[str, Any],
                        last_checkpoint: Path | None) -> str:
    """The error text: where, which values, what was logged, and where to restart from."""
    def num(x: Any) -> str:
        if x is None:
            return "n/a"
        return f"{float(x.detach().float().mean() if isinstance(x, torch.Tensor) else x):.4g}"

    terms = ", ".join(f"{k}={num(v)}" for k, v in sorted(metrics.items())) or "none logged"
    where = f"{last_checkpoint}" if last_checkpoint is not None else "none (no checkpoint written yet)"
    return (f"non-finite update at step {step} of optimizer(s) {names}: loss={num(loss)}, grad_norm={num(norm)}; "
            f"metrics of this step: {terms}; the update was not applied. Last good checkpoint: {where}. "
            "Lower the learning rate or find the NaN source; EngineConfig(on_nonfinite='skip') drops such "
            "updates instead of stopping.")


def check_finite_weights(models: Mapping[str, nn.Module], step: int) -> None:
    """Raise `NonFiniteError` naming the first parameter or buffer that holds a NaN or inf."""
    for name, model in models.items():
        for kind, tensors in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
            for pname, t in tensors:
                if t.is_floating_point() and not is_finite(t):
                    raise NonFiniteError(
                        f"step {step}: {kind} {pname!r} of model {name!r} holds NaN/inf; refusing to write a "
                        "checkpoint with non-finite weights (the last checkpoint on disk is the last good one)")
