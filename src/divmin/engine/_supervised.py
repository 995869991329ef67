"""`CrossEntropyTask`: the one supervised task (a classifier, or a causal LM on its completion tokens).

Every recipe that trains a teacher, a feature classifier or a warm-up LM on labels uses it,
so the loss, the sampling of batches and the optimizer are written once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ._context import StepContext

__all__ = ["CrossEntropyTask", "IGNORE_INDEX", "LM_INPUTS"]

IGNORE_INDEX = -100  # label that carries no loss (F.cross_entropy's default; divmin.lm.IGNORE)
LM_INPUTS = ("input_ids", "attention_mask", "position_ids")  # divmin.lm.assemble's model inputs


class CrossEntropyTask:
    """Engine task: cross-entropy of a model's logits against integer labels.

    The loss of a batch is the mean over its counted positions i (labels != -100)

        L = -(1 / n) * sum_i log softmax(z_i)[y_i]

    i.e. ``F.cross_entropy(logits.flatten(0, -2), labels.flatten(), ignore_index=-100)``.
    Two forms of data:

    * tensors ``(x, y)``, x (N, ...) and y (N,) class ids: every step draws ``batch_size``
      rows with replacement from ``ctx.cpu_generator`` (so a run is reproducible and
      resumable), adds ``input_noise`` x N(0, 1) to x when > 0 (same generator), and the
      model maps x (B, ...) to logits (B, C);
    * rows with a ``collate`` function (e.g. :class:`divmin.lm.LMCollator`): the engine
      shuffles them through a ``DataLoader``; a batch is a dict with ``labels`` (B, L)
      aligned with the logits (:func:`divmin.lm.assemble`'s layout: no shift) and the model
      inputs named by ``inputs``; the model returns logits (B, L, V) or an object with
      ``.logits`` (Hugging Face).

    Args:
        model: the network to train.
        data: ``(x, y)`` tensors, or a sequence of rows for ``collate``.
        lr: learning rate of ``optimizer``.
        batch_size: rows per micro-batch.
        optimizer: the optimizer class, called as ``optimizer(params, lr=lr)``.
        name: the model's and the optimizer's name (checkpoint files, log keys).
        collate: rows -> batch dict; required for rows, refused for tensors.
        inputs: the batch keys passed to the model (rows only).
        input_noise: std of the Gaussian noise added to x (tensors only).

    >>> import torch
    >>> task = CrossEntropyTask(torch.nn.Linear(3, 2), (torch.zeros(4, 3), torch.tensor([0, 1, 1, 0])),
    ...                         lr=0.1, batch_size=2)
    >>> sorted(task.models())
    ['model']
    """

    def __init__(self, model: nn.Module, data: tuple[Tensor, Tensor] | Sequence[Any], *, lr: float,
                 batch_size: int, optimizer: Callable[..., torch.optim.Optimizer] = torch.optim.AdamW,
                 name: str = "model", collate: Callable[[list], dict[str, Tensor]] | None = None,
                 inputs: Sequence[str] = LM_INPUTS, input_noise: float = 0.0) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"`model` must be an nn.Module, got {type(model).__name__}")
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
            raise ValueError(f"`lr` must be a number > 0, got {lr!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be an int >= 1, got {batch_size!r}")
        if isinstance(input_noise, bool) or not isinstance(input_noise, (int, float)) or not input_noise >= 0:
            raise ValueError(f"`input_noise` must be a number >= 0, got {input_noise!r}")
        self.tensors = isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, Tensor) for t in data)
        if self.tensors:
            _check_tensors(*data, collate)
        elif collate is None or not callable(collate):
            raise TypeError("`collate` must be a callable when `data` is not an (x, y) pair of tensors")
        elif not isinstance(data, Sequence) or isinstance(data, (str, bytes)) or len(data) == 0:
            raise ValueError("`data` must be an (x, y) pair of tensors or a non-empty sequence of rows")
        elif input_noise:
            raise ValueError("`input_noise` applies to (x, y) tensors only")
        self.model, self.data, self.lr, self.batch_size = model, data, lr, batch_size
        self.optimizer, self.name, self.collate, self.inputs = optimizer, name, collate, tuple(inputs)
        self.input_noise = float(input_noise)

    def models(self) -> dict[str, nn.Module]:
        return {self.name: self.model}

    def optimizers(self, models: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        return {self.name: self.optimizer(models[self.name].parameters(), lr=self.lr)}

    def batches(self, ctx: StepContext) -> DataLoader | None:
        if self.tensors:  # the step samples its own rows: no epochs over a small tensor set
            return None
        return DataLoader(self.data, batch_size=self.batch_size, shuffle=True, collate_fn=self.collate)

    def train_step(self, batch: dict[str, Tensor] | None, ctx: StepContext) -> Tensor:
        model = ctx.models[self.name]
        if self.tensors:
            x, y = self.data
            idx = torch.randint(0, x.shape[0], (self.batch_size,), generator=ctx.cpu_generator)
            x = x[idx]
            if self.input_noise:
                x = x + self.input_noise * torch.randn(x.shape, generator=ctx.cpu_generator)
            logits, labels = model(x.to(ctx.device)), y[idx].to(ctx.device)
        else:
            out = model(**{k: batch[k] for k in self.inputs})
            logits, labels = getattr(out, "logits", out), batch["labels"]
        return F.cross_entropy(logits.flatten(0, -2), labels.flatten(), ignore_index=IGNORE_INDEX)


def _check_tensors(x: Tensor, y: Tensor, collate: Any) -> None:
    if collate is not None:
        raise TypeError("`collate` applies to rows only; `data` is an (x, y) pair of tensors")
    if y.dim() != 1 or y.dtype.is_floating_point or y.dtype == torch.bool:
        raise ValueError(f"`data` labels y must be a 1-D integer tensor, got {y.dtype} {tuple(y.shape)}")
    if x.dim() < 1 or x.shape[0] != y.shape[0] or y.shape[0] == 0:
        raise ValueError(f"`data` x {tuple(x.shape)} and y {tuple(y.shape)} must have the same number (>= 1) of rows")
