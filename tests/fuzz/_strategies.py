"""Hypothesis strategies for the fuzz suite: tensors of any dtype with special values, and bad scalars."""

from __future__ import annotations

import math

import torch
from hypothesis import strategies as st

from ._harness import DTYPES, SPECIALS


@st.composite
def tensors(draw, shape, *, dtypes=DTYPES, specials: bool = True, low: float = -20.0, high: float = 20.0):
    """A tensor of ``shape`` (a tuple of ints), dtype from ``dtypes``, sometimes with a special value."""
    dtype = draw(st.sampled_from(dtypes))
    n = math.prod(shape)
    values = draw(st.lists(st.floats(low, high, allow_nan=False), min_size=n, max_size=n))
    t = torch.tensor(values, dtype=torch.float64).reshape(shape)
    if specials and n and draw(st.booleans()):
        t.view(-1)[draw(st.integers(0, n - 1))] = draw(st.sampled_from(SPECIALS))
    if dtype == torch.int64:
        return torch.nan_to_num(t, nan=0.0, posinf=9.0, neginf=-9.0).clamp(-9, 9).to(torch.int64)
    return t.to(dtype)


def log_probs(n: int):
    """(n,) log-probabilities (<= 0), sometimes with a special value or a wrong dtype."""
    return tensors((n,), low=-30.0, high=0.0).map(lambda t: t if not t.is_floating_point() else -t.abs())


def scalars():
    """Scalars a user may pass for a real parameter: good, out of range, NaN, inf, bool, string, None."""
    return st.sampled_from([0.1, 1.0, 2.5, 0.0, -1.0, math.nan, math.inf, True, "0.1", None])
