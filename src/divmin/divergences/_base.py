"""The registry of divergences: the `Discrepancy` protocol, the `Divergence` (f) base class.

Convention (DESIGN.md), used everywhere in divmin::

    D_f(P || Q) = E_Q[ f(r) ],   r = dP/dQ,   f convex, f(1) = 0

P is the target (teacher, data, reference policy, energy-based target), Q the
model. Every elementwise method takes ``log r`` (never ``r``) so that members can
stay finite where ``exp(log r)`` would overflow.

Members of other kinds (entropic optimal transport, the integral KL over a
diffusion path) share the registry through the small :class:`Discrepancy`
protocol: a name, a ``kind``, parameters. A method declares the kinds it takes
(``as_divergence(x, kinds=("f",))``, the default) and refuses the others with
an error naming them. Names may carry parameters as a spec string:
``"alpha:0.3"`` (the member's one parameter) or ``"sinkhorn:epsilon=0.05,cost='l1'"``.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import math
import numbers
from typing import Any, Callable, ClassVar, Sequence, TypeVar

import torch
from torch import Tensor

from ..registry import Registry, did_you_mean
from ._hooks import TritonTerms, deprecated_categorical_terms, settle_hooks
from ._numerics import finite_interval
from ._terms import generic_categorical_terms

__all__ = ["Discrepancy", "Divergence", "register", "divergence", "available_divergences", "available_kinds",
           "as_divergence"]

MEMBERS: Registry[type["Discrepancy"]] = Registry("divergence")

_D = TypeVar("_D", bound=type["Discrepancy"])


@dataclasses.dataclass(frozen=True)
class Discrepancy:
    """What every registry member is: a ``name``, a ``kind`` and parameters (dataclass fields).

    Kinds: ``"f"`` (:class:`Divergence`, the f-divergence family: closed forms, g, h),
    ``"optimal_transport"`` (Sinkhorn), and the kinds later methods add. Instances are
    immutable and hashable, so they compare by value and capability checks are cached.
    """

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""

    @property
    def params(self) -> dict[str, Any]:
        """The member's parameters, e.g. ``{"alpha": 0.5}``."""
        return {fld.name: getattr(self, fld.name) for fld in dataclasses.fields(self)}

    @property
    def spec(self) -> str:
        """The spec string that :func:`divergence` parses back into this member.

        >>> divergence("alpha", alpha=0.3).spec
        'alpha:0.3'
        >>> divergence(divergence("generalized_js", beta=0.2).spec)
        GeneralizedJS(beta=0.2)
        """
        params = self.params
        if not params:
            return self.name
        if len(params) == 1:
            return f"{self.name}:{next(iter(params.values()))!r}"
        return self.name + ":" + ",".join(f"{k}={v!r}" for k, v in params.items())

    # --- capabilities (divmin.divergences._capabilities): what a method may ask of a member
    def why_not(self, capability: str) -> str | None:
        """None if the member has ``capability`` (see :func:`available_capabilities`), else the reason."""
        from ._capabilities import why_not

        return why_not(self, capability)

    def supports(self, capability: str) -> bool:
        """Whether the member has ``capability``, e.g. ``"implicit_reward"`` (f-DPO) or ``"score_weight"``."""
        return self.why_not(capability) is None

    def require(self, capability: str, argname: str = "divergence") -> "Discrepancy":
        """``self``, or ValueError naming ``argname`` and saying why the member lacks ``capability``."""
        from ._capabilities import describe

        why = self.why_not(capability)
        if why is not None:
            raise ValueError(f"`{argname}`: {self} cannot be used with {describe(capability)}: {why}")
        return self

    def __str__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.name}({args})" if args else self.name


_ELEMENTWISE = ("f", "g", "h", "log_h")


def _takes_numbers(fn: Callable[[Any, Tensor], Tensor]) -> Callable[[Any, Tensor], Tensor]:
    """Let an elementwise method take a real number as well as a tensor of ``log r``."""
    @functools.wraps(fn)
    def method(self: Any, log_r: Any) -> Tensor:
        if isinstance(log_r, Tensor):
            return fn(self, log_r)
        if isinstance(log_r, numbers.Real) and not isinstance(log_r, bool):
            return fn(self, torch.tensor(float(log_r), dtype=torch.float64))
        raise TypeError(f"`log_r` must be a tensor or a real number (the log of the density ratio r = P/Q), "
                        f"got {type(log_r).__name__}")

    method._takes_numbers = True  # type: ignore[attr-defined]
    return method


@dataclasses.dataclass(frozen=True)
class Divergence(Discrepancy):
    """An f-divergence ``D_f(P || Q) = E_Q[f(P/Q)]`` defined by its generator f.

    Subclasses define, elementwise on a tensor ``log_r`` of log density ratios
    ``log(P/Q)``:

    * ``f(log_r)``: the generator f(r), convex with f(1) = 0;
    * ``g(log_r)``: ``f(r) - r f'(r)``, the policy-gradient weight
      (f-DPG: grad D = E_Q[g(r) grad log Q]) and the f-DPO implicit reward link;
    * ``h(log_r)``: ``r^2 f''(r)``, the score-matching weight of f-distill;

    and ``perspective()``, the member with generator ``f*(u) = u f(1/u)`` (the
    perspective of f at 1), so that ``D_{f*}(P || Q) = D_f(Q || P)``. (Not the
    Fenchel conjugate, which an f-GAN critic needs.) The closed form between
    categoricals (:func:`divmin.categorical_divergence`) is built from f, g and the
    perspective alone: each term ``Q f(P/Q)`` is evaluated on whichever side keeps
    the ratio at most 1, which is what keeps it finite for extreme logits.

    Optional fast paths of that closed form: :meth:`terms` (torch) and :meth:`triton_terms`
    (the GPU kernel's). A subclass inherits them only while it leaves f, g and the
    perspective alone (:attr:`has_triton_terms` says whether the class has GPU terms).
    Parameters are dataclass fields, validated in ``__post_init__``.
    """

    kind: ClassVar[str] = "f"

    # --- elementwise, to be defined by every member --------------------------------------
    def f(self, log_r: Tensor) -> Tensor:
        raise NotImplementedError

    def g(self, log_r: Tensor) -> Tensor:
        raise NotImplementedError

    def h(self, log_r: Tensor) -> Tensor:
        raise NotImplementedError

    @_takes_numbers
    def log_h(self, log_r: Tensor) -> Tensor:
        """``log h(r)``, for weights normalised in log space (f-distill): finite where h overflows.

        This default takes the log of h evaluated in float64 (exact up to |log r| of a few
        hundred); members whose h grows like a power of r override it with the closed form.
        """
        dtype = torch.promote_types(log_r.dtype, torch.float32)
        return torch.log(self.h(log_r.to(torch.float64))).to(dtype)

    def perspective(self) -> "Divergence":
        raise NotImplementedError

    def g_range(self, dtype: torch.dtype = torch.float32) -> tuple[float, float]:
        """The interval of ``log r`` on which g and dg/dlog r = -h stay finite in ``dtype``, with room to spare.

        Within it |g| and |h| are at most ``finfo(dtype).max / 8``, so a difference of two rewards
        times a moderate beta cannot overflow. f-DPO clamps ``log r`` to it and nowhere else: reverse KL
        (g = 1 - log r, h = 1) only at |log r| = max / 8, forward KL (g = -r) at log r = log(max / 8).
        Found once per member and dtype from the member's own g and h (:func:`finite_interval`); a
        member may override it.

        >>> divergence("forward_kl").g_range(torch.float32)[0]  # g = -r -> 0 as r -> 0
        -inf
        >>> round(divergence("pearson_chi2").g_range(torch.float32)[1], 2)  # h = 2 r^2 < max / 8
        42.98
        """
        return _g_range(self, dtype)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # f, g, h and log_h also take a Python number (0-d float64 tensor out), as torch functions do
        super().__init_subclass__(**kwargs)
        for name in _ELEMENTWISE:
            fn = cls.__dict__.get(name)
            if fn is not None and not getattr(fn, "_takes_numbers", False):
                setattr(cls, name, _takes_numbers(fn))
        settle_hooks(cls, Divergence)  # which fast paths (terms, triton_terms) this class may inherit

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

    def terms(self, model_logp: Tensor, target_logp: Tensor, *, with_grad: bool = False,
              model_p: Tensor | None = None, target_p: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Elementwise ``F = Q f(P/Q)`` and (if ``with_grad``) ``B = Q g(P/Q)``, model first.

        ``model_logp``, ``target_logp``: log-probabilities ``log Q``, ``log P`` (any shape, the
        same for both; ``-inf`` for probability 0); ``model_p``, ``target_p``: ``exp`` of them
        when the caller has them (fast paths use them). Returns two tensors of that shape, or
        ``(F, None)``. The categorical closed form's value is the sum of F, and its gradient is
        built from F and B (``divmin.divergences._categorical``), so a member's gradient is
        defined where its terms are.

        This generic version works for any member from f, g and the perspective; members
        override it with a direct formula for speed (the tests check every override against
        this one). A subclass that changes f (or g, the perspective...) without overriding
        ``terms`` gets this generic version back, never its parent's formula.
        """
        return generic_categorical_terms(self, model_logp, target_logp, with_grad)

    categorical_terms = deprecated_categorical_terms  # the target-first hook of earlier releases

    has_triton_terms: ClassVar[bool] = False
    """Whether the class provides GPU kernel terms (:meth:`triton_terms`), set when the class is
    defined: True for every registry member and for a subclass that leaves their math alone (or
    writes its own ``triton_terms``); False for a member without them, whose categorical
    divergences then run on the torch path (``backend="triton"`` refuses it with the reason,
    ``"auto"`` on CUDA warns once per class)."""

    _triton_missing: ClassVar[str | None] = "it defines no `triton_terms`"

    def triton_terms(self) -> "TritonTerms | None":
        """The member's GPU terms for the Triton kernel, or None (the torch path computes it).

        A member returns a :class:`~divmin.divergences.TritonTerms`: a ``@triton.jit`` function
        ``fn(lq, lp, q, p, c0, c1, c2) -> (F, B)`` computing :meth:`terms` on a block of one row
        in float32 (model first), and its three constants. Called only when the Triton backend
        may run (the function's module imports triton).
        """
        return None

    # --- conveniences ------------------------------------------------------------------------
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
        avoiding = bool(torch.isinf(self.perspective().f(zero)).item())
        return {(True, False): "mode-seeking", (False, True): "mass-covering",
                (True, True): "both", (False, False): "balanced"}[(forcing, avoiding)]

    def categorical(self, model_logits: Tensor, target_logits: Tensor, **kwargs: Any) -> Tensor:
        """``D(softmax(target) || softmax(model))``, model first; see :func:`divmin.categorical_divergence`."""
        from ._categorical import categorical_divergence

        return categorical_divergence(model_logits, target_logits, divergence=self, **kwargs)


@functools.lru_cache(maxsize=256)
def _g_range(member: Divergence, dtype: torch.dtype) -> tuple[float, float]:
    return finite_interval((member.g, member.h), dtype)


def register(name: str) -> Callable[[_D], _D]:
    """Class decorator adding a :class:`Discrepancy` subclass to the registry under ``name``."""

    def deco(cls: _D) -> _D:
        if not (isinstance(cls, type) and issubclass(cls, Discrepancy)) or not cls.kind:
            raise TypeError(f"register({name!r}) expects a Discrepancy subclass with a kind, got {cls!r}")
        if not name.isidentifier():
            raise ValueError(f"register: {name!r} is not a valid name (letters, digits and _)")
        if name in MEMBERS:
            raise ValueError(f"divergence {name!r} is already registered by {MEMBERS.get(name).__name__}")
        cls.name = name
        return MEMBERS.add(name, cls)

    return deco


def available_divergences(kind: str | None = None) -> list[str]:
    """Registered names, sorted; only those of ``kind`` (e.g. ``"f"``) when given.

    >>> "js" in available_divergences("f") and "sinkhorn" not in available_divergences("f")
    True
    """
    if kind is not None and kind not in available_kinds():
        raise ValueError(f"unknown kind {kind!r}; valid kinds: {', '.join(available_kinds())}")
    return [n for n, cls in MEMBERS.items() if kind is None or cls.kind == kind]


def available_kinds() -> list[str]:
    """The kinds of the registered members, sorted."""
    return sorted({cls.kind for _, cls in MEMBERS.items()})


def _parse_spec(spec: str, cls: type[Discrepancy]) -> dict[str, Any]:
    """Parameters from the part of a spec after ':' (``"0.3"`` or ``"k=v,k2=v2"``, Python literals)."""
    fields = [fld.name for fld in dataclasses.fields(cls)]
    out: dict[str, Any] = {}
    for item in spec.split(","):
        key, eq, raw = item.partition("=")
        if not eq:  # a bare value sets the member's only parameter
            if len(fields) != 1 or len(spec.split(",")) != 1:
                raise ValueError(f"divergence spec {cls.name}:{spec}: a bare value needs a member with exactly one "
                                 f"parameter; {cls.name} has {fields or 'none'} (write key=value)")
            key, raw = fields[0], item
        try:
            out[key.strip()] = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = raw.strip()  # a bare word, e.g. cost=l1
    return out


def divergence(name: str, **params: Any) -> Discrepancy:
    """The registry member ``name`` with its parameters; ``name`` may be a spec string.

    >>> divergence("js")
    JS()
    >>> divergence("alpha", alpha=0.3).params
    {'alpha': 0.3}
    >>> divergence("alpha:0.3") == divergence("alpha", alpha=0.3)
    True
    """
    if not isinstance(name, str):
        raise TypeError(f"divergence: `name` must be a str, got {type(name).__name__}")
    base, colon, rest = name.partition(":")
    if base.strip() not in MEMBERS:  # the message says "valid names", as every divergence= error does
        hint = did_you_mean(base.strip(), available_divergences())
        raise ValueError(f"unknown divergence {base!r}{hint}; valid names: {', '.join(available_divergences())}")
    cls = MEMBERS.get(base.strip())
    if colon:
        parsed = _parse_spec(rest, cls)
        both = sorted(set(parsed) & set(params))
        if both:
            raise TypeError(f"divergence {name!r}: parameter(s) {both} given both in the spec and as keywords")
        params = {**parsed, **params}
    valid = [fld.name for fld in dataclasses.fields(cls)]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise TypeError(
            f"divergence {base!r} got unknown parameter(s) {unknown}; "
            f"its parameters are {valid or 'none'}"
        )
    return cls(**params)


def as_divergence(divergence_or_name: "str | Discrepancy", argname: str = "divergence", *,
                  kinds: Sequence[str] | None = ("f",)) -> Any:
    """Accept a registry name, spec string or member, as every ``divergence=`` argument does.

    ``kinds`` are the kinds the caller can use (default: f-divergences only; None: any);
    a member of another kind is refused with a ValueError naming ``argname``.

    >>> as_divergence("alpha:0.5")
    Alpha(alpha=0.5)
    >>> as_divergence("sinkhorn")
    Traceback (most recent call last):
    ...
    ValueError: `divergence`: sinkhorn(epsilon=0.1, cost='sqeuclidean', debias=True) is of kind 'optimal_transport'; this takes kind(s) ['f'] (f members: alpha, forward_kl, ...)
    """
    if isinstance(divergence_or_name, str):
        member = divergence(divergence_or_name)
    elif isinstance(divergence_or_name, Discrepancy):
        member = divergence_or_name
    else:
        raise TypeError(
            f"`{argname}` must be a registry name (str) or a Divergence, "
            f"got {type(divergence_or_name).__name__}"
        )
    if kinds is not None and member.kind not in kinds:
        names = available_divergences(kinds[0]) if kinds[0] in available_kinds() else []
        examples = ", ".join(names) if len(names) <= 4 else ", ".join(names[:2]) + ", ..."  # a short kind: all
        raise ValueError(f"`{argname}`: {member} is of kind {member.kind!r}; this takes kind(s) {list(kinds)}"
                         + (f" ({kinds[0]} members: {examples})" if names else ""))
    return member
