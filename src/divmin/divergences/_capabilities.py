"""What a method may ask of a registry member, decided once per member and cached.

A capability is a named probe ``member -> None | reason``; methods call
``member.require("implicit_reward")`` (or ``supports`` / ``why_not``) instead of
re-deriving the property on every call. Members are immutable and hashable, so
the answer is cached per member (by value).

* ``"implicit_reward"`` (f-DPO): the reward-to-policy map
  ``pi = pi_ref / g^{-1}((R - lambda) / beta)`` exists: g = f - r f' strictly
  decreasing (h = r^2 f'' > 0) and unbounded below as r -> inf (the f-DPO paper's
  "0 not in the domain of f'"), so that every reward maps to a policy.
* ``"score_weight"`` (f-distill, and any score-matching estimator): h = r^2 f'' is
  defined, finite, non-negative and not identically 0 (total variation is
  piecewise linear: h = 0 almost everywhere, so it gives no gradient).
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Callable, NamedTuple

import torch

from ..registry import Registry

if TYPE_CHECKING:
    from ._base import Discrepancy

__all__ = ["available_capabilities", "capability", "describe", "why_not"]

Probe = Callable[["Discrepancy"], "str | None"]


class _Capability(NamedTuple):
    probe: Probe
    used_by: str  # what needs the capability, for error messages


CAPABILITIES: Registry[_Capability] = Registry("capability")

# log r grids on which the probes look at g and h: wide for the sign of h (f-DPO's
# rewards can sit far out), moderate for f-distill's weights (clamped log ratios).
_WIDE = torch.linspace(-30.0, 30.0, 601, dtype=torch.float64)
_MODERATE = torch.linspace(-8.0, 8.0, 33, dtype=torch.float64)


def capability(name: str, used_by: str) -> Callable[[Probe], Probe]:
    """Register a probe ``member -> None (has it) | str (why not)`` under ``name``.

    ``used_by`` names what needs the capability ("f-DPO"), for error messages.
    """
    return CAPABILITIES.register(name, wrap=lambda _, probe: _Capability(probe, used_by))


def available_capabilities() -> list[str]:
    """Names accepted by ``Discrepancy.supports`` / ``require`` / ``why_not``.

    >>> available_capabilities()
    ['implicit_reward', 'score_weight']
    """
    return CAPABILITIES.names()


def _get(name: str) -> _Capability:
    if name not in CAPABILITIES:
        raise ValueError(f"unknown capability {name!r}; valid: {', '.join(available_capabilities())}")
    return CAPABILITIES.get(name)


def describe(name: str) -> str:
    """What needs capability ``name`` (e.g. ``"f-DPO"``)."""
    return _get(name).used_by


@functools.lru_cache(maxsize=1024)
def why_not(member: "Discrepancy", name: str) -> str | None:
    """None if ``member`` has capability ``name``, else the reason (cached per member)."""
    probe = _get(name).probe
    if member.kind != "f":
        return f"it is of kind {member.kind!r}, and {name} is defined for f-divergences only"
    return probe(member)


def _on_h(grid: torch.Tensor) -> Callable[[Callable], Probe]:
    """A probe ``(member, h) -> reason`` given h = r^2 f'' on ``grid``; a member without h lacks it."""

    def wrap(probe: Callable[["Discrepancy", torch.Tensor], "str | None"]) -> Probe:
        @functools.wraps(probe)
        def run(member: "Discrepancy") -> str | None:
            try:
                h = member.h(grid)
            except NotImplementedError:
                return "it defines no h = r^2 f''"
            return probe(member, h)

        return run

    return wrap


@capability("implicit_reward", "f-DPO (its implicit reward must map back to a policy)")
@_on_h(_WIDE)
def _implicit_reward(member, h: torch.Tensor) -> str | None:
    if not bool((h > 0).all()):
        return "h = r^2 f''(r) = 0 somewhere: g is not invertible"
    g_inf = float(member.g(torch.tensor([math.inf], dtype=torch.float64)))
    if g_inf != -math.inf:
        return f"g(r) -> {g_inf:.4g} as pi -> 0 (r -> inf): rewards below that bound map to no policy"
    return None


@capability("score_weight", "f-distill (its score-matching weight h = r^2 f'')")
@_on_h(_MODERATE)
def _score_weight(member, h: torch.Tensor) -> str | None:
    if not bool(torch.isfinite(h).all()) or bool((h < 0).any()):
        return "h = r^2 f'' is non-finite or negative"
    if bool((h == 0).all()):
        return "h = r^2 f'' = 0 almost everywhere (f is piecewise linear), so it gives no gradient"
    return None
