"""Building blocks for losses that fuse a divergence into other work (``divmin.distill``'s fused
LM-head losses, the estimators' inputs): the shared argument checks, the backend choice, the torch
chunk step (values and analytic logit gradients of a block of rows) and the Triton row kernel.

These are the pieces :func:`divmin.categorical_divergence` is made of, exported so that a
method package can reuse them without reaching into private modules. ``triton_rows`` needs
Triton (``pip install "divmin[triton]"``) and is imported on first use.
"""

from __future__ import annotations

from typing import Any

from ._backend import BACKENDS, check_backend, triton_terms_for
from ._categorical import chunk_rows_and_grads, default_chunk_rows, softmax_pair
from ._checks import NonFiniteInputError, check_float_tensor, check_index_tensor, check_log_probs, check_real

# Columns per Triton block at most: a row longer than this is streamed in several blocks
# with an online log-sum-exp. 4096 keeps every member's kernel within registers on sm_80/90;
# tests lower it to exercise the multi-block path on small vocabularies.
MAX_BLOCK = 4096

__all__ = ["BACKENDS", "MAX_BLOCK", "NonFiniteInputError", "check_backend", "check_float_tensor", "check_index_tensor", "check_log_probs",
           "check_real", "chunk_rows_and_grads", "default_chunk_rows", "softmax_pair", "triton_block_size", "triton_rows",
           "triton_terms_for"]


def triton_rows(*args: Any, **kwargs: Any) -> Any:
    """The Triton row kernel (see ``divmin.divergences._triton.triton_rows``), imported on first use."""
    from ._triton import triton_rows as rows

    return rows(*args, **kwargs)


def triton_block_size(vocab: int) -> int:
    """Columns per block the Triton kernel uses for rows of ``vocab`` entries (at most ``MAX_BLOCK``)."""
    from ._triton import triton_block_size as size

    return size(vocab)
