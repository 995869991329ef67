"""What `DistillTrainer` does per task, as small objects in a registry keyed by ``DistillConfig.task``.

A task knows its rows (how a dataset becomes rows, how rows are collated), how a
batch is forwarded to logits, which of its options apply, and which metric it
reports besides the shared ones. Both shipped tasks let the losses see the rows
whose label is not ``IGNORE`` (completion tokens of a causal LM; every example
of a classifier).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ..engine import is_default
from ..lm import IGNORE, LMCollator, compact, counted_logits, tokenize_pairs
from ..registry import Registry

__all__ = ["DISTILL_TASKS", "DistillTaskKind", "CausalLM", "SequenceClassification"]


def _logits(out: Any) -> Tensor:
    logits = getattr(out, "logits", out)
    if not isinstance(logits, Tensor):
        raise TypeError(f"the model returned {type(out).__name__}, neither a tensor nor an object with `.logits`")
    return logits


def lm_inputs(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """The causal-LM forward inputs of a collated batch."""
    return {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}


class DistillTaskKind:
    """Base of the task objects; the defaults are shared by both tasks."""

    name: str = ""
    samples: bool = False  # draws completions before a step (on-policy `lmbda`, `seq_kd`)
    metric: str = ""  # reported by evaluate() besides ce, divergence and teacher_agreement

    def check_config(self, config: Any) -> None:
        """Refuse options the task does not use (called by ``DistillConfig``)."""

    def token_ids(self, config: Any, tokenizer: Any, pad_id: int | None, eos_id: int | None
                  ) -> tuple[int | None, int | None]:
        """(pad_id, eos_id) the rows and samplers use; None when the task has no tokens."""
        return None, None

    def collator(self, pad_id: int | None) -> Callable[[list[Any]], dict[str, Tensor]]:
        raise NotImplementedError  # pragma: no cover - abstract

    def rows(self, dataset: Any, tokenizer: Any, name: str) -> list[Any]:
        raise NotImplementedError  # pragma: no cover - abstract

    def forward(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError  # pragma: no cover - abstract

    def counted(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        """(N, V) logits of ``model`` at the rows whose label is not IGNORE, in order (default: forward, then pick)."""
        return self.forward(model, batch)[batch["labels"] != IGNORE]

    def compact(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The batch the losses see once its completions are final (default: unchanged)."""
        return batch

    def pick(self, student: Tensor, teacher: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(student, teacher, label) rows the losses see: those whose label is not IGNORE, flattened."""
        keep = labels != IGNORE
        return student[keep], teacher[keep], labels[keep]

    def report(self, ce: float, accuracy: float) -> dict[str, float]:
        """The task's own metric from the mean held-out CE and label accuracy."""
        raise NotImplementedError  # pragma: no cover - abstract


class CausalLM(DistillTaskKind):
    """Token-level KD of a causal LM on the completion tokens of prompt/completion rows."""

    name, samples, metric = "causal_lm", True, "ppl"

    def token_ids(self, config: Any, tokenizer: Any, pad_id: int | None, eos_id: int | None
                  ) -> tuple[int | None, int | None]:
        pad = _token_id(pad_id, tokenizer, ("pad_token_id", "eos_token_id"), "pad_id")
        sampling = config.lmbda > 0 or config.seq_kd or eos_id is not None
        return pad, _token_id(eos_id, tokenizer, ("eos_token_id",), "eos_id") if sampling else None

    def collator(self, pad_id: int | None) -> Callable[[list[Any]], dict[str, Tensor]]:
        return LMCollator(pad_id)

    def rows(self, dataset: Any, tokenizer: Any, name: str) -> list[Any]:
        return tokenize_pairs(dataset, tokenizer, name)

    def forward(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        return _logits(model(**lm_inputs(batch)))

    def counted(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        """The head on the completion positions only (:func:`divmin.lm.counted_logits`)."""
        return counted_logits(model, batch)

    def compact(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """No model work on the layout's padding columns (:func:`divmin.lm.compact`)."""
        return compact(batch)

    def report(self, ce: float, accuracy: float) -> dict[str, float]:
        return {"ppl": math.exp(ce)}


class SequenceClassification(DistillTaskKind):
    """KD of a classifier on rows (dicts of tensors) with a ``labels`` entry."""

    name, samples, metric = "sequence_classification", False, "accuracy"
    lm_only = ("lmbda", "seq_kd", "max_new_tokens", "generation_temperature", "fused", "fused_backend")

    def check_config(self, config: Any) -> None:
        for field in self.lm_only:
            if not is_default(config, field):
                raise ValueError(f"`{field}` applies to `task`='causal_lm' only, got task={config.task!r}")

    def collator(self, pad_id: int | None) -> Callable[[list[Any]], dict[str, Tensor]]:
        return torch.utils.data.default_collate

    def rows(self, dataset: Any, tokenizer: Any, name: str) -> list[Any]:
        rows = list(dataset)
        if not rows:
            raise ValueError(f"`{name}` is empty")
        return rows

    def forward(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        """``model(x)`` for rows with an ``x`` entry, else ``model(**inputs)`` with every entry but ``labels``."""
        if "x" in batch:
            return _logits(model(batch["x"]))
        return _logits(model(**{k: v for k, v in batch.items() if k != "labels"}))

    def report(self, ce: float, accuracy: float) -> dict[str, float]:
        return {"accuracy": accuracy}


# task name -> task object; DistillConfig.task must be one of these names
DISTILL_TASKS: Registry[DistillTaskKind] = Registry("distill task")
DISTILL_TASKS.add(CausalLM.name, CausalLM())
DISTILL_TASKS.add(SequenceClassification.name, SequenceClassification())


def _token_id(value: int | None, tokenizer: Any, attrs: tuple[str, ...], name: str) -> int:
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"`{name}` must be an int, got {value!r}")
        return value
    for attr in attrs:
        found = getattr(tokenizer, attr, None)
        if isinstance(found, int):
            return found
    raise ValueError(f"`{name}`: give it explicitly or pass a `tokenizer` with {' / '.join(attrs)}")
