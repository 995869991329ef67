"""Which implementation computes a categorical divergence: plain torch or the Triton kernel.

``"torch"`` runs everywhere. ``"triton"`` (``pip install "divmin[triton]"``) runs
``_triton.py``'s kernel on CUDA tensors in float32/16/bf16 for every member whose
class has Triton terms (``Divergence.has_triton_terms``: every registry member, and
the subclasses that leave their math alone), and raises when it cannot. ``"auto"``
takes Triton when it can and torch otherwise; on CUDA it says once per class when a
member's lack of Triton terms is the reason. This module never imports triton unless
a Triton backend may run.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from ._base import Divergence

__all__ = ["BACKENDS", "triton_terms_for"]

BACKENDS = ("auto", "torch", "triton")
_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_WARNED: set[type] = set()  # classes whose torch fallback "auto" has reported


def _why_no_terms(div: Divergence) -> str:
    return type(div)._triton_missing or "its `triton_terms` returns None for these parameters"


def _warn_fallback(div: Divergence) -> None:
    if type(div) not in _WARNED:
        _WARNED.add(type(div))
        warnings.warn(f'backend="auto": {div} runs on the torch path, not the Triton kernel: '
                      f"{_why_no_terms(div)}. Define `triton_terms` on the class (docs: the family page, "
                      'adding a member), or pass backend="torch" to choose that path', UserWarning, stacklevel=4)


def check_backend(backend: Any) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"`backend` must be one of {BACKENDS}, got {backend!r}")
    return backend


def triton_terms_for(backend: str, div: Divergence, x: Tensor, *, why_not: str | None = None) -> Any:
    """The member's Triton terms if the Triton backend runs on ``x``, else None (torch).

    ``why_not``: a reason the caller cannot use Triton here (e.g. the target needs a
    gradient); ``"auto"`` then falls back, ``"triton"`` raises with it.
    """
    if backend == "torch" or (backend == "auto" and (not x.is_cuda or why_not)):
        return None
    if why_not:
        raise ValueError(f'backend="triton": {why_not}; use backend="torch"')
    try:
        from ._triton import interpreting
    except ImportError as err:
        if backend == "auto":
            return None
        raise ImportError('backend="triton" needs Triton: pip install "divmin[triton]"') from err
    terms = div.triton_terms() if div.has_triton_terms else None
    if terms is None and backend == "auto" and x.is_cuda:
        _warn_fallback(div)
    usable = terms is not None and x.dtype in _TRITON_DTYPES and (x.is_cuda or interpreting())
    if usable or backend == "auto":
        return terms if usable else None
    if x.dtype not in _TRITON_DTYPES:
        raise ValueError(f'backend="triton" computes in float32 and takes float32/16/bf16 inputs, got {x.dtype}; '
                         'use backend="torch"')
    if terms is None:
        raise ValueError(f'backend="triton" has no terms for {div}: {_why_no_terms(div)}; define '
                         '`triton_terms` on the class or use backend="torch"')
    raise ValueError('backend="triton" needs CUDA tensors (or TRITON_INTERPRET=1 to run the kernel on CPU)')
