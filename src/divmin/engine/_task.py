"""The contract between a method and the engine: `Task`, `StepOutput`, `TrainResult`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import nn

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ._context import StepContext


@dataclass
class StepOutput:
    """What ``Task.train_step`` returns.

    loss: a scalar tensor to minimise with *all* the task's optimizers (the
        engine does backward, accumulation, clipping, step, zero_grad); or None
        when the step already called ``ctx.update(...)`` itself.
    metrics: scalars to log (python numbers or tensors; a tensor with several
        elements is averaged). The engine averages them over micro-batches and
        processes; ``loss`` is added as ``"loss"`` unless already present.
    """

    loss: torch.Tensor | None = None
    metrics: Mapping[str, float | torch.Tensor] = field(default_factory=dict)


@dataclass
class TrainResult:
    """What ``Trainer.fit`` returns.

    metrics: the last logged record (without "step").
    history: every record logged by this ``fit`` call, each a dict with "step".
    out_dir: the run directory (None when no files were written).
    step: engine steps completed (== max_steps unless stopped early).
    optimizer_steps: number of ``optimizer.step()`` calls per optimizer name,
        counted over the whole run including before a resume.
    stopped_early: True when a ``ctx.request_stop()`` ended the run.
    skipped_updates: updates dropped as non-finite per optimizer name
        (``EngineConfig.on_nonfinite="skip"``), over the whole run.
    """

    metrics: dict[str, float]
    history: list[dict[str, float]]
    out_dir: Path | None
    step: int
    optimizer_steps: dict[str, int]
    stopped_early: bool = False
    skipped_updates: dict[str, int] = field(default_factory=dict)


@runtime_checkable
class Task(Protocol):
    """A training method, as the engine sees it.

    Required:

    ``models() -> dict[str, nn.Module]``
        Every network the method uses, by name. Called once per ``fit``, after
        seeding, so initialisation is reproducible. A model with at least one
        ``requires_grad`` parameter is *trainable* (wrapped for DDP etc.); the
        others are *frozen* (moved to the device, put in eval mode, autocast).
        All models are checkpointed (an EMA copy is frozen yet changes) except
        those named in the optional ``static_models`` attribute.
    ``optimizers(models) -> dict[str, Optimizer]``
        Optimizers over the (already device-placed, unwrapped) models' params.
        Naming rule: an optimizer is named after the model or role it updates
        ("student", "policy", "generator", "critic"), never after its
        algorithm ("adam", "adamw"); the name is an identifier
        (``[A-Za-z_][A-Za-z0-9_]*``). Names become checkpoint file names
        (``optimizers/<name>``) and log keys (``lr/<name>``,
        ``grad_norm/<name>``); the engine refuses any other name.
    ``train_step(batch, ctx) -> StepOutput | Tensor | None``
        One micro-batch of work. Either return a loss (simple case; a bare
        tensor means ``StepOutput(loss=tensor)``), or call
        ``ctx.update(name, loss)`` as often as needed and return
        ``StepOutput(loss=None, metrics=...)`` (advanced case: GANs,
        alternating updates, critic at a different rate).

    Optional (looked up with ``getattr``; omit what you do not need):

    ``batches(ctx) -> DataLoader | Iterable | None``
        The data. A ``DataLoader`` is sharded across processes and
        device-placed by Accelerate; its shuffling is re-seeded per epoch from
        ``EngineConfig.seed`` so data order survives resume. Any other iterable
        is used as is (moved to the device; re-iterated at each epoch; on
        resume fast-forwarded by the number of batches consumed, so it must be
        deterministic). ``None`` or no method: ``batch`` is None and the step
        samples by itself (use ``ctx.generator``).
    ``evaluate(ctx) -> dict[str, float | Tensor]``
        Called every ``eval_every`` steps with models in eval mode; results are
        averaged over processes and logged as ``"eval/<key>"``.
    ``state_dict() -> Any`` / ``load_state_dict(state) -> None``
        Extra method state (running normaliser estimates, baselines, counters):
        nested dicts/lists/tuples of tensors, numpy arrays and JSON scalars.
        Saved per process in every checkpoint and restored on resume.
    ``find_unused_parameters: bool``
        True when some trainable parameters get no gradient from a step's
        losses (e.g. a network used only through part of its layers): DDP then
        looks for them after each forward (slower; see PyTorch's DDP docs).
    ``static_models: Collection[str]``
        Names of models that never change (teacher, reference policy): they are
        not written to checkpoints, since ``models()`` rebuilds them.

    Rules that make DDP and exact resume work: draw randomness from
    ``ctx.generator`` (or the global RNGs, which are checkpointed), not from a
    private RNG; keep metric keys identical on every process at logged steps.
    """

    def models(self) -> dict[str, nn.Module]: ...

    def optimizers(self, models: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]: ...

    def train_step(self, batch: Any, ctx: StepContext) -> StepOutput | torch.Tensor | None: ...


def as_step_output(value: Any) -> StepOutput:
    """Normalise what ``train_step`` returned into a `StepOutput`."""
    if isinstance(value, StepOutput):
        return value
    if value is None:
        return StepOutput()
    if isinstance(value, torch.Tensor):
        return StepOutput(loss=value)
    raise TypeError(f"train_step must return StepOutput, a loss tensor or None, got {type(value).__name__}")


def static_model_names(task: Any) -> frozenset[str]:
    """The task's ``static_models`` (empty when absent)."""
    names: Iterable[str] = getattr(task, "static_models", ()) or ()
    return frozenset(names)
