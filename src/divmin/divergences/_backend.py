"""Which implementation computes a categorical divergence: plain torch or the Triton kernel.

``"torch"`` runs everywhere. ``"triton"`` (``pip install "divmin[triton]"``) runs
``_triton.py``'s kernel on CUDA tensors in float32/16/bf16 for every member that
has Triton terms (all registry members; not subclasses, which may change f), and
raises when it cannot. ``"auto"`` takes Triton when it can and torch otherwise.
This module never imports triton unless a Triton backend may run.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._base import Divergence

__all__ = ["BACKENDS", "triton_terms_for"]

BACKENDS = ("auto", "torch", "triton")
_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


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
        from ._triton import interpreting, triton_terms
    except ImportError as err:
        if backend == "auto":
            return None
        raise ImportError('backend="triton" needs Triton: pip install "divmin[triton]"') from err
    terms = triton_terms(div)
    usable = terms is not None and x.dtype in _TRITON_DTYPES and (x.is_cuda or interpreting())
    if usable or backend == "auto":
        return terms if usable else None
    if x.dtype not in _TRITON_DTYPES:
        raise ValueError(f'backend="triton" computes in float32 and takes float32/16/bf16 inputs, got {x.dtype}; '
                         'use backend="torch"')
    if terms is None:
        raise ValueError(f'backend="triton" has no terms for {div}: it covers the registry members as registered '
                         '(not subclasses); use backend="torch"')
    raise ValueError('backend="triton" needs CUDA tensors (or TRITON_INTERPRET=1 to run the kernel on CPU)')
