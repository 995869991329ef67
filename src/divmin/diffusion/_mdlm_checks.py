"""Argument checks of the masked-diffusion functions (MDLM, DiDi-Instruct): errors name the argument.

The token checks reuse :func:`divmin.data.check_token_ids`; the tensor checks
:func:`divmin.divergences._checks.check_float_tensor`. Value checks read the tensors
(one host sync each): they guard a training step's inputs, which are small next to the
network's forward pass.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..data import check_token_ids
from ..divergences import check_float_tensor, check_real

MAX_STEPS = 100_000
"""The most sampler steps accepted (``nfe`` or ``len(times) - 1``): MDLM papers use up to a few thousand;
beyond this a typo (``nfe=10**9``) would run for hours instead of failing."""


def check_int(name: str, value: Any, *, ge: int) -> int:
    """``value`` as an int >= ``ge`` (not a bool), or a ``TypeError``/``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an int >= {ge}, got {type(value).__name__} {value!r}")
    if value < ge:
        raise ValueError(f"`{name}` must be an int >= {ge}, got {value!r}")
    return value


def check_mask_id(mask_id: Any) -> int:
    """The mask id is V, the number of data tokens: an int >= 1."""
    return check_int("mask_id", mask_id, ge=1)


def check_times(name: str, t: Any, batch: int) -> Tensor:
    """(B,) floating diffusion times in [0, 1], B = ``batch``."""
    check_float_tensor(name, t, ndim=1)
    if t.shape[0] != batch:
        raise ValueError(f"`{name}` must have shape ({batch},), one time per sequence, got {tuple(t.shape)}")
    if not torch._C._are_functorch_transforms_active() and bool(((t < 0) | (t > 1) | t.isnan()).any()):
        raise ValueError(f"`{name}` must be in [0, 1], got {t.detach().flatten()[:8].tolist()}")
    return t


def check_log_probs3(name: str, log_probs: Any, shape: tuple[int, ...], mask_id: int) -> None:
    """(B, L, V + 1) floating SUBS log-probabilities for ids of ``shape`` (B, L)."""
    check_float_tensor(name, log_probs, ndim=3)
    want = (*shape, mask_id + 1)
    if tuple(log_probs.shape) != want:
        raise ValueError(f"`{name}` must have shape {want} ((B, L) ids, V + 1 = `mask_id` + 1 columns), "
                         f"got {tuple(log_probs.shape)}")


def check_masked_rows(name: str, log_probs: Tensor, z: Tensor, mask_id: int) -> None:
    """Every masked position of ``z`` needs a proper distribution over the data tokens: no NaN, no +inf,
    not all -inf (a denoiser whose output went NaN must not be sampled from as if it were a model)."""
    masked = z == mask_id
    if not bool(masked.any()):
        return
    rows = log_probs.detach()[masked][:, :mask_id]
    total = torch.logsumexp(rows.double(), -1)
    if bool(rows.isnan().any()) or not bool(total.isfinite().all()):
        raise ValueError(f"`{name}` holds NaN, +inf or no probability mass (all -inf) over the data tokens at a "
                         "masked position: not a distribution to sample from")


def check_ids(name: str, ids: Any, mask_id: int, *, with_mask: bool, shape: tuple[int, ...] | None = None) -> Tensor:
    """(B, L) integer ids in [0, V] (``with_mask``) or [0, V) (data only), of ``shape`` if given."""
    what = "with the mask id" if with_mask else "data ids only (the mask id is V = `mask_id`)"
    if not with_mask and isinstance(ids, Tensor) and not ids.is_floating_point() and bool((ids == mask_id).any()):
        raise ValueError(f"`{name}` holds the mask id {mask_id}: it must be clean data, ids in [0, {mask_id})")
    try:
        ids = check_token_ids(ids, name, vocab_size=mask_id + 1 if with_mask else mask_id)
    except ValueError as err:
        raise ValueError(f"{err} ({what})") from None
    if shape is not None and tuple(ids.shape) != tuple(shape):
        raise ValueError(f"`{name}` must have shape {tuple(shape)}, got {tuple(ids.shape)}")
    return ids


def check_grid(times: Any) -> list[float]:
    """A sampler's explicit time grid: finite, strictly decreasing from 1 to 0, at most MAX_STEPS steps."""
    if isinstance(times, Tensor):
        times = times.detach().flatten().tolist()
    if isinstance(times, (str, bytes)) or not hasattr(times, "__len__"):
        raise TypeError(f"`times` must be a sequence of floats or a 1-D tensor, got {type(times).__name__}")
    if len(times) > MAX_STEPS + 1:
        raise ValueError(f"`times` has {len(times) - 1} steps, more than {MAX_STEPS}")
    grid = [check_real(f"times[{i}]", v) for i, v in enumerate(times)]
    if len(grid) < 2 or grid[0] != 1.0 or grid[-1] != 0.0 or any(a <= b for a, b in zip(grid, grid[1:])):
        raise ValueError(f"`times` must decrease strictly from 1 to 0, got {grid[:8]}{' ...' if len(grid) > 8 else ''}")
    return grid


def check_nfe(nfe: Any) -> int:
    nfe = check_int("nfe", nfe, ge=1)
    if nfe > MAX_STEPS:
        raise ValueError(f"`nfe` must be at most {MAX_STEPS} sampler steps, got {nfe}")
    return nfe


def check_step_times(t: Any, s: Any) -> tuple[float, float]:
    """One reverse step's times 0 <= s < t <= 1."""
    t, s = check_real("t", t), check_real("s", s)
    if not 0.0 <= s < t <= 1.0:
        raise ValueError(f"need 0 <= `s` < `t` <= 1, got t={t}, s={s}")
    return t, s


__all__ = ["MAX_STEPS", "check_grid", "check_ids", "check_int", "check_log_probs3", "check_mask_id",
           "check_masked_rows", "check_nfe", "check_step_times", "check_times"]
