"""The fuzz suite's rule and its bookkeeping.

Each case calls a public function on generated arguments. An outcome is one of

- ``"value"``: it returned, and the result is correct by the suite's standard: no NaN
  unless an input held NaN (then NaN may propagate), finite unless an input was
  infinite or huge or the function is documented to reach +inf (``may_be_inf``);
- ``"clear error"``: a ``ValueError`` / ``TypeError`` whose message names an argument
  in backticks (`` `beta` ``) or a divergence member that refuses the request;
- ``"other"``: anything else (another exception, a NaN for finite inputs, an
  unnamed error): a defect, and the test fails with the case in its message.

``TALLY`` counts outcomes per function, for ``python -m tests.fuzz.report``.
"""

from __future__ import annotations

import collections
import math
import re
from typing import Any, Callable

import torch
from hypothesis import HealthCheck, settings

TALLY: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
# (a registry's refusal of a name, "unknown recipe 'x'; available: ...", lists the valid ones, and an
# override's, "--set scale: 'nan' is not a float", names its key: clear too)
_NAMED = re.compile(r"`[A-Za-z_][\w.\[\]]*`|cannot be used with|is not an f-divergence|unknown [\w ]+ '.*'; "
                    r"available|--set [\w.]+:|unknown divergence|kind")

# values that make an input "special": NaN, +-inf, and magnitudes where float16/bfloat16 overflow
SPECIALS = (math.nan, math.inf, -math.inf, 1e30, -1e30, 0.0, 1e-30)
DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int64)


def _flags(args: Any) -> tuple[bool, bool]:
    """(some input holds NaN, some input is infinite or beyond float32's comfortable range)."""
    nan = inf = False
    stack = [args]
    while stack:
        x = stack.pop()
        if isinstance(x, (list, tuple)):
            stack.extend(x)
        elif isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, torch.Tensor) and x.is_floating_point() and x.numel():
            nan |= bool(torch.isnan(x).any())
            inf |= bool((x.double().abs() > 1e15).any())
        elif isinstance(x, float):
            nan |= math.isnan(x)
            inf |= abs(x) > 1e15
        elif hasattr(x, "log_probs"):  # TopKTeacher
            stack.extend([x.log_probs, x.indices])
    return nan, inf


def classify(name: str, fn: Callable[..., Any], *args: Any, may_be_inf: bool = False, **kwargs: Any) -> str:
    """Run one case, record its outcome under ``name`` and return it (see the module docstring)."""
    nan_in, inf_in = _flags((args, kwargs))
    try:
        out = fn(*args, **kwargs)
        if isinstance(out, tuple) and hasattr(out, "loss"):
            out = out.loss
        if isinstance(out, torch.Tensor) and out.requires_grad and out.numel() == 1 and out.isfinite().all():
            out.backward()
    except (ValueError, TypeError) as err:
        outcome = "clear error" if _NAMED.search(str(err)) else f"other: unnamed {type(err).__name__}: {err}"
    except Exception as err:  # noqa: BLE001 - the point is to catch whatever escapes
        outcome = f"other: {type(err).__name__}: {err}"
    else:
        outcome = _judge(out, nan_in, inf_in or may_be_inf)
    TALLY[name]["value" if outcome == "value" else outcome if outcome == "clear error" else "other"] += 1
    return outcome


def _judge(out: Any, nan_in: bool, extreme_in: bool) -> str:
    if not isinstance(out, torch.Tensor) or not out.is_floating_point():
        return "value"
    if bool(torch.isnan(out).any()) and not nan_in:
        return "other: NaN from inputs without NaN"
    if bool(torch.isinf(out).any()) and not (extreme_in or nan_in):
        return "other: inf from finite, moderate inputs"
    return "value"

# seeded (derandomized) so CI sees the same cases every run, and bounded in number
FUZZ = settings(derandomize=True, deadline=None, max_examples=60, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
