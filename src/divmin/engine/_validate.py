"""One declarative check for every config dataclass: `validate(config)`.

A config class lists one check per field in a ``CHECKS`` class attribute (not
annotated, so that it is no dataclass field), and its ``__post_init__`` is
``validate(self)`` followed by its cross-field rules::

    @dataclasses.dataclass
    class MyConfig:
        lr: float = 1e-3  # learning rate
        steps: int = 100  # optimizer steps
        mode: str = "online"  # "online" or "offline"
        CHECKS = dict(lr=Number(gt=0), steps=Int(ge=1), mode=OneOf(("online", "offline")))

        def __post_init__(self) -> None:
            validate(self)

A field without a check (or a check naming no field) is a programming error,
reported on the first construction. Every error names the field in backticks
and shows the value it got. A value of the wrong type raises `ConfigTypeError`,
which is both a ``TypeError`` and a ``ValueError`` (configs raised
``ValueError`` for every bad value before); a value of the right type outside
its range raises ``ValueError``.

Cross-field rules stay as short explicit code after ``validate(self)``;
`is_default` tells whether an option was left at its default, for options that
apply in one mode only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = [
    "Bool",
    "Check",
    "ConfigTypeError",
    "IsDivergence",
    "Instance",
    "Int",
    "Number",
    "OneOf",
    "Tuple",
    "checks_of",
    "is_default",
    "validate",
]


class ConfigTypeError(TypeError, ValueError):
    """A config field holds a value of the wrong type (also a ``ValueError``, as config errors were before)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Check:
    """Base of the field checks: ``check(name, value)`` raises an error naming the field."""

    optional: bool = False  # None is accepted too

    def __call__(self, name: str, value: Any) -> None:
        if value is None and self.optional:
            return
        self.check(name, value)

    def check(self, name: str, value: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def what(self) -> str:
        """What an accepted value is, e.g. ``"a finite number > 0"``."""
        raise NotImplementedError  # pragma: no cover - abstract

    def fail(self, name: str, value: Any, error: type[Exception] = ValueError) -> None:
        what = self.what() + (" or None" if self.optional else "")
        raise error(f"`{name}` must be {what}, got {value!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Bounded(Check):
    gt: float | None = None  # value > gt
    ge: float | None = None  # value >= ge
    lt: float | None = None  # value < lt
    le: float | None = None  # value <= le

    def _bounds(self) -> str:
        lo = f"({self.gt:g}" if self.gt is not None else f"[{self.ge:g}" if self.ge is not None else None
        hi = f"{self.lt:g})" if self.lt is not None else f"{self.le:g}]" if self.le is not None else None
        if lo and hi:
            return f" in {lo}, {hi}"
        ops = [(">", self.gt), (">=", self.ge), ("<", self.lt), ("<=", self.le)]
        return "".join(f" {op} {v:g}" for op, v in ops if v is not None)

    def _inside(self, v: float) -> bool:
        return ((self.gt is None or v > self.gt) and (self.ge is None or v >= self.ge)
                and (self.lt is None or v < self.lt) and (self.le is None or v <= self.le))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Number(_Bounded):
    """A finite int or float (not a bool) within the bounds.

    >>> Number(gt=0)("lr", 0.0)
    Traceback (most recent call last):
    ...
    ValueError: `lr` must be a finite number > 0, got 0.0
    >>> Number(ge=0, lt=1)("decay", "x")
    Traceback (most recent call last):
    ...
    divmin.engine._validate.ConfigTypeError: `decay` must be a finite number in [0, 1), got 'x'
    """

    def what(self) -> str:
        return "a finite number" + self._bounds()

    def check(self, name: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(name, value, ConfigTypeError)
        if not (math.isfinite(value) and self._inside(value)):
            self.fail(name, value)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Int(_Bounded):
    """An int (not a bool) within the bounds.

    >>> Int(ge=1)("batch_size", 0)
    Traceback (most recent call last):
    ...
    ValueError: `batch_size` must be an int >= 1, got 0
    """

    def what(self) -> str:
        return "an int" + self._bounds()

    def check(self, name: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(name, value, ConfigTypeError)
        if not self._inside(value):
            self.fail(name, value)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Bool(Check):
    """True or False (not 0/1)."""

    def what(self) -> str:
        return "a bool"

    def check(self, name: str, value: Any) -> None:
        if not isinstance(value, bool):
            self.fail(name, value, ConfigTypeError)


@dataclasses.dataclass(frozen=True)
class OneOf(Check):
    """One of ``choices``: a tuple, a registry dict (its keys; read at check time, so later
    registrations count) or a function returning the names.

    >>> OneOf(("online", "offline"))("mode", "sideways")
    Traceback (most recent call last):
    ...
    ValueError: `mode` must be one of 'online', 'offline', got 'sideways'
    """

    choices: tuple[Any, ...] | Mapping[Any, Any] | Callable[[], Iterable[Any]]

    def names(self) -> list[Any]:
        return list(self.choices() if callable(self.choices) else self.choices)

    def what(self) -> str:
        return "one of " + ", ".join(map(repr, self.names()))

    def check(self, name: str, value: Any) -> None:
        try:
            ok = value in self.names()
        except TypeError:  # an unhashable value
            ok = False
        if not ok:
            self.fail(name, value)


@dataclasses.dataclass(frozen=True)
class Instance(Check):
    """An instance of ``types`` (a nested config such as ``engine: EngineConfig``, a path)."""

    types: type | tuple[type, ...]

    def what(self) -> str:
        names = [t.__name__ for t in (self.types if isinstance(self.types, tuple) else (self.types,))]
        return ("an " if names[0][0] in "AEIOU" else "a ") + " or ".join(names)

    def check(self, name: str, value: Any) -> None:
        if not isinstance(value, self.types):
            self.fail(name, value, ConfigTypeError)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Text(Check):
    """A free-form non-empty string (a label, a model name or path); names from a fixed set use `OneOf`."""

    def what(self) -> str:
        return "a non-empty string"

    def check(self, name: str, value: Any) -> None:
        if not isinstance(value, str):
            self.fail(name, value, ConfigTypeError)
        if not value.strip():
            self.fail(name, value)


@dataclasses.dataclass(frozen=True)
class Tuple(Check):
    """A tuple (or list): fixed-length with one check per position (``items``), or of any
    length >= ``min_len`` with one check for every item (``each``); items are named ``field[i]``.

    >>> Tuple((Number(gt=0, lt=1), Number(gt=1)))("ratio_clamp", (0.1, 0.5))
    Traceback (most recent call last):
    ...
    ValueError: `ratio_clamp[1]` must be a finite number > 1, got 0.5
    """

    items: tuple[Check, ...] | None = None  # one check per position (fixed length)
    each: Check | None = None  # one check for every item (any length)
    min_len: int = 0  # with `each`: the fewest items accepted

    def __post_init__(self) -> None:
        if (self.items is None) == (self.each is None):
            raise TypeError("Tuple: give exactly one of `items` and `each`")

    def what(self) -> str:
        if self.items is not None:
            return f"a tuple of {len(self.items)} items"
        return "a tuple" if self.min_len == 0 else f"a tuple of at least {self.min_len} item(s)"

    def check(self, name: str, value: Any) -> None:
        if not isinstance(value, (tuple, list)):
            self.fail(name, value, ConfigTypeError)
        checks = self.items if self.items is not None else (self.each,) * len(value)
        if len(value) != len(checks) or len(value) < self.min_len:
            self.fail(name, value)
        for i, (check, item) in enumerate(zip(checks, value)):
            check(f"{name}[{i}]", item)


@dataclasses.dataclass(frozen=True)
class IsDivergence(Check):
    """A registry member: a name, spec string (``"alpha:0.3"``) or member (``as_divergence``).

    ``kinds`` are the member kinds the method can use (default f-divergences);
    ``capability`` is one the member must have (``"implicit_reward"`` for f-DPO,
    ``"score_weight"`` for f-distill; see ``divmin.divergences.available_capabilities``);
    ``parse`` replaces the lookup for fields that take strings only, or words besides
    registry names (a recipe's ``"ce"``; it returns None for those). Errors are
    prefixed by the field name.

    >>> IsDivergence()("divergence", "no_such")
    Traceback (most recent call last):
    ...
    ValueError: `divergence`: unknown divergence 'no_such'; valid names: ...
    >>> IsDivergence(capability="implicit_reward")("divergence", "total_variation")
    Traceback (most recent call last):
    ...
    ValueError: `divergence`: total_variation cannot be used with f-DPO ...
    """

    kinds: tuple[str, ...] | None = ("f",)  # accepted member kinds; None: any
    capability: str | None = None  # a capability the member must have
    parse: Callable[[str], Any] | None = None  # str -> member (or None for a non-registry word)

    def what(self) -> str:
        return "a registry name (str) or a Divergence" if self.parse is None else "a divergence spec (str)"

    def check(self, name: str, value: Any) -> None:
        from ..divergences import as_divergence  # divergences sit below the engine; imported when used

        if self.parse is not None and not isinstance(value, str):
            self.fail(name, value, ConfigTypeError)
        try:
            div = self.parse(value) if self.parse is not None else value
            if div is not None:
                div = as_divergence(div, name, kinds=self.kinds)
                if self.capability is not None:
                    div.require(self.capability, name)
        except (TypeError, AttributeError) as err:
            raise ConfigTypeError(_named(name, err)) from None
        except (ValueError, KeyError) as err:
            raise ValueError(_named(name, err)) from None


def _named(name: str, err: Exception) -> str:
    msg = str(err.args[0]) if err.args else str(err)
    return msg if f"`{name}`" in msg else f"`{name}`: {msg}"


def checks_of(cls: type) -> dict[str, Check]:
    """The ``CHECKS`` of a config class, refusing a field without a check or a check without a field."""
    checks = getattr(cls, "CHECKS", None)
    if not isinstance(checks, Mapping):
        raise TypeError(f"{cls.__name__} needs a CHECKS class variable (field name -> Check)")
    names = [f.name for f in dataclasses.fields(cls)]
    missing, unknown = [n for n in names if n not in checks], sorted(set(checks) - set(names))
    if missing or unknown:
        raise TypeError(f"{cls.__name__}.CHECKS: fields without a check {missing}, checks of no field {unknown}")
    return dict(checks)


def validate(config: Any) -> None:
    """Check every field of a config dataclass against its class's ``CHECKS``.

    >>> import dataclasses
    >>> @dataclasses.dataclass
    ... class Opt:
    ...     lr: float = 1e-3  # learning rate
    ...     steps: int = 10  # optimizer steps
    ...     CHECKS = dict(lr=Number(gt=0), steps=Int(ge=1))
    ...
    ...     def __post_init__(self) -> None:
    ...         validate(self)
    >>> Opt(lr=1, steps=3)
    Opt(lr=1, steps=3)
    >>> Opt(steps=2.5)
    Traceback (most recent call last):
    ...
    divmin.engine._validate.ConfigTypeError: `steps` must be an int >= 1, got 2.5
    """
    checks = checks_of(type(config))
    for field in dataclasses.fields(config):  # in field order: the first bad field is reported
        checks[field.name](field.name, getattr(config, field.name))


def is_default(config: Any, name: str) -> bool:
    """Whether field ``name`` holds its declared default (for options that apply in one mode only)."""
    field = next(f for f in dataclasses.fields(config) if f.name == name)
    default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
    return getattr(config, name) == default
