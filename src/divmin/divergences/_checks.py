"""Argument checks shared by the functional entry points (clear errors naming the argument)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

__all__ = ["check_float_tensor", "check_index_tensor"]


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
