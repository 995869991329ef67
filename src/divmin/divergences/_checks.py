"""Argument checks shared by the functional entry points (clear errors naming the argument)."""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import Tensor

__all__ = ["NonFiniteInputError", "check_float_tensor", "check_index_tensor", "check_log_probs", "check_real"]


class NonFiniteInputError(ValueError):
    """A loss received NaN/inf values where it needs finite ones (logits, log-probabilities, scores).

    A ``ValueError`` naming the argument; inside a training run it usually means the model's
    outputs went non-finite, and the engine reports it as a ``NonFiniteError`` naming the step.
    """


def check_float_tensor(name: str, x: Any, *, ndim: int | None = None, nonempty_last: bool = False) -> None:
    """Raise ``TypeError`` unless ``x`` is a floating tensor, ``ValueError`` on a wrong rank or empty last dim."""
    if not isinstance(x, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"`{name}` must have a floating dtype, got {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"`{name}` must have {ndim} dims, got shape {tuple(x.shape)}")
    if nonempty_last and (x.ndim < 1 or x.shape[-1] < 1):
        raise ValueError(f"`{name}` needs a non-empty last dim, got shape {tuple(x.shape)}")


def check_index_tensor(name: str, x: Any, shape: tuple[int, ...], *, what: str = "an integer") -> None:
    """Raise ``TypeError`` unless ``x`` is a bool/integer tensor, ``ValueError`` unless its shape is ``shape``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor or None, got {type(x).__name__}")
    if x.is_floating_point() or x.is_complex():
        raise TypeError(f"`{name}` must be {what} tensor, got {x.dtype}")
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"`{name}` must have the logits' leading shape {tuple(shape)}, got {tuple(x.shape)}")


def check_log_probs(name: str, x: Any, *, shape: tuple[int, ...] | None = None) -> None:
    """A (B,) floating tensor of log-probabilities: non-empty, no NaN, no +inf (``-inf`` = probability 0).

    ``shape``: the shape it must have (that of another argument); otherwise any non-empty 1-D shape.
    """
    check_float_tensor(name, x, ndim=1)
    if shape is not None and tuple(x.shape) != tuple(shape):
        raise ValueError(f"`{name}` must have shape {tuple(shape)}, got {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"`{name}` is empty: the batch holds no sample")
    # under vmap / grad transforms values cannot be inspected (the call is checked without them)
    if not torch._C._are_functorch_transforms_active() and (bool(torch.isnan(x).any()) or bool((x == math.inf).any())):
        raise NonFiniteInputError(f"`{name}` contains NaN or +inf (a log-probability is at most 0, -inf for "
                                  "probability 0)")


def check_real(name: str, x: Any, *, gt: float | None = None, ge: float | None = None, finite: bool = True) -> float:
    """``x`` as a float: a real number (Python, NumPy or 0-d tensor; not a bool) within the bounds."""
    if isinstance(x, Tensor) and x.numel() == 1 and not x.dtype == torch.bool:
        x = x.item()
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise TypeError(f"`{name}` must be a real number, got {type(x).__name__} {x!r}")
    value = float(x)
    if (finite and not math.isfinite(value)) or math.isnan(value):
        raise ValueError(f"`{name}` must be a finite number, got {value!r}")
    if gt is not None and not value > gt:
        raise ValueError(f"`{name}` must be > {gt}, got {value!r}")
    if ge is not None and not value >= ge:
        raise ValueError(f"`{name}` must be >= {ge}, got {value!r}")
    return value
