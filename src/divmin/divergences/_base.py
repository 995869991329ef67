"""The `Divergence` base class and the name registry.

Convention (DESIGN.md), used everywhere in divmin::

    D_f(P || Q) = E_Q[ f(r) ],   r = dP/dQ,   f convex, f(1) = 0

P is the target (teacher, data, reference policy, energy-based target), Q the
model. Every elementwise method takes ``log r`` (never ``r``) so that members can
stay finite where ``exp(log r)`` would overflow.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, ClassVar, TypeVar

import torch
from torch import Tensor

from ._terms import generic_categorical_terms

__all__ = ["Divergence", "register", "divergence", "available_divergences", "as_divergence"]

_REGISTRY: dict[str, type["Divergence"]] = {}

_D = TypeVar("_D", bound=type["Divergence"])


@dataclasses.dataclass(frozen=True)
class Divergence:
    """An f-divergence ``D_f(P || Q) = E_Q[f(P/Q)]`` defined by its generator f.

    Subclasses define, elementwise on a tensor ``log_r`` of log density ratios
    ``log(P/Q)``:

    * ``f(log_r)``: the generator f(r), convex with f(1) = 0;
    * ``g(log_r)``: ``f(r) - r f'(r)``, the policy-gradient weight
      (f-DPG: grad D = E_Q[g(r) grad log Q]) and the f-DPO implicit reward link;
    * ``h(log_r)``: ``r^2 f''(r)``, the score-matching weight of f-distill;

    and ``conjugate()``, the member with generator ``f*(u) = u f(1/u)``, so that
    ``D_{f*}(P || Q) = D_f(Q || P)``. The closed form between categoricals
    (:func:`divmin.categorical_divergence`) is built from f, g and the conjugate
    alone: each term ``Q f(P/Q)`` is evaluated on whichever side keeps the ratio
    at most 1, which is what keeps it finite for extreme logits.

    Parameters are dataclass fields, validated in ``__post_init__``; instances
    are immutable and hashable, so they compare by value.
    """

    name: ClassVar[str] = ""

    # --- elementwise, to be defined by every member --------------------------------------
    def f(self, log_r: Tensor) -> Tensor:
        raise NotImplementedError

    def g(self, log_r: Tensor) -> Tensor:
        raise NotImplementedError

    def h(self, log_r: Tensor) -> Tensor:
        raise NotImplementedError

    def conjugate(self) -> "Divergence":
        raise NotImplementedError

    # --- weighted forms used by the categorical closed form --------------------------------
    # Categorical terms are w * f(s) with s = -|log r| <= 0 and log_w the log of the larger
    # probability. Members whose f grows like a power of 1/r as s -> -inf (Neyman chi^2,
    # alpha < 0) override these so that w underflowing to 0 while f overflows never gives NaN.
    def f_nonpos(self, s: Tensor) -> Tensor:
        """``f`` restricted to ``log r <= 0``; members with a two-branch f skip the other branch."""
        return self.f(s)

    def weighted_f(self, log_w: Tensor, s: Tensor) -> Tensor:
        """``exp(log_w) * f(exp(s))`` for ``s <= 0``."""
        return torch.exp(log_w) * self.f_nonpos(s)

    def weighted_g(self, log_w: Tensor, s: Tensor) -> Tensor:
        """``exp(log_w) * g(exp(s))`` for ``s <= 0``."""
        return torch.exp(log_w) * self.g(s)

    def categorical_terms(self, logp: Tensor, logq: Tensor, with_grad: bool) -> tuple[Tensor, Tensor | None]:
        """Elementwise ``Q f(P/Q)`` and (if ``with_grad``) ``Q g(P/Q)`` from log-probabilities.

        The generic version works for any member; members may override it with a
        direct formula for speed (tests check every override against the generic one).
        """
        return generic_categorical_terms(self, logp, logq, with_grad)

    # --- conveniences ------------------------------------------------------------------------
    @property
    def params(self) -> dict[str, Any]:
        """The member's parameters, e.g. ``{"alpha": 0.5}``."""
        return {fld.name: getattr(self, fld.name) for fld in dataclasses.fields(self)}

    @property
    def h_bounded(self) -> bool:
        """Whether h(r) = r^2 f''(r) stays bounded on (0, inf): f-distill's weight cannot blow up."""
        ends = self.h(torch.tensor([-math.inf, math.inf], dtype=torch.float64))
        return bool(torch.isfinite(ends).all())

    @property
    def behaviour(self) -> str:
        """How ``min_Q D(P || Q)`` treats P's modes, read off the tails of f.

        ``f(0) = inf`` forces Q to zero where P is zero ("mode-seeking");
        ``f(r)/r -> inf`` (``f*(0) = inf``) forbids Q to be zero where P is not
        ("mass-covering"); "both", or "balanced" (the bounded-tail members: JS, TV,
        Hellinger, alpha in (0, 1)).
        """
        zero = torch.tensor([-math.inf], dtype=torch.float64)
        forcing = bool(torch.isinf(self.f(zero)).item())
        avoiding = bool(torch.isinf(self.conjugate().f(zero)).item())
        return {(True, False): "mode-seeking", (False, True): "mass-covering",
                (True, True): "both", (False, False): "balanced"}[(forcing, avoiding)]

    def categorical(self, target_logits: Tensor, model_logits: Tensor, **kwargs: Any) -> Tensor:
        """``D(softmax(target) || softmax(model))``; see :func:`divmin.categorical_divergence`."""
        from ._categorical import categorical_divergence

        return categorical_divergence(target_logits, model_logits, self, **kwargs)

    def __str__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.name}({args})" if args else self.name


def register(name: str) -> Callable[[_D], _D]:
    """Class decorator adding a `Divergence` subclass to the registry under ``name``."""

    def deco(cls: _D) -> _D:
        if not (isinstance(cls, type) and issubclass(cls, Divergence)):
            raise TypeError(f"register({name!r}) expects a Divergence subclass, got {cls!r}")
        if name in _REGISTRY:
            raise ValueError(f"divergence {name!r} is already registered by {_REGISTRY[name].__name__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def available_divergences() -> list[str]:
    """Names accepted by :func:`divergence`, sorted."""
    return sorted(_REGISTRY)


def divergence(name: str, **params: Any) -> Divergence:
    """The registry member ``name`` with its parameters, e.g. ``divergence("alpha", alpha=0.3)``.

    >>> divergence("js")
    JS()
    >>> divergence("alpha", alpha=0.3).params
    {'alpha': 0.3}
    """
    if not isinstance(name, str):
        raise TypeError(f"divergence: `name` must be a str, got {type(name).__name__}")
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown divergence {name!r}; valid names: {', '.join(available_divergences())}"
        ) from None
    valid = [fld.name for fld in dataclasses.fields(cls)]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise TypeError(
            f"divergence {name!r} got unknown parameter(s) {unknown}; "
            f"its parameters are {valid or 'none'}"
        )
    return cls(**params)


def as_divergence(divergence_or_name: "str | Divergence", argname: str = "divergence") -> Divergence:
    """Accept a registry name or a `Divergence` instance, as every ``divergence=`` argument does."""
    if isinstance(divergence_or_name, Divergence):
        return divergence_or_name
    if isinstance(divergence_or_name, str):
        return divergence(divergence_or_name)
    raise TypeError(
        f"`{argname}` must be a registry name (str) or a Divergence, "
        f"got {type(divergence_or_name).__name__}"
    )
