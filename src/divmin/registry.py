"""`Registry`: the one name -> object table behind every registry of divmin.

Divergences, LR schedules, robust objectives, Sinkhorn costs, recipes (``divmin run``),
train methods (``divmin train``), exporters and CLI commands are each a `Registry`:
registered with its decorator, listed sorted, looked up with an error that names
the valid entries (and the closest one, when a name is mistyped)::

    SCHEDULES = Registry("schedule")

    @SCHEDULES.register("cosine")
    def cosine(step, warmup, total): ...

    SCHEDULES.get("cosnie")   # ValueError: unknown schedule 'cosnie' (did you mean 'cosine'?); available: cosine
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

__all__ = ["Registry", "did_you_mean"]

T = TypeVar("T")


def did_you_mean(word: str, choices: Iterable[str], *, prefix: str = "") -> str:
    """``" (did you mean 'x'?)"`` for the choice closest to ``word`` (``prefix`` + choice), or ``""``.

    >>> did_you_mean("fti", ["fit", "weat"])
    " (did you mean 'fit'?)"
    >>> did_you_mean("zzz", ["fit", "weat"])
    ''
    """
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {prefix + close[0]!r}?)" if close else ""


class Registry(Generic[T]):
    """A table of named entries of one ``kind`` (the word error messages use: "recipe", "schedule"...).

    ``register(name)`` is a decorator that adds the decorated object (or what ``wrap(name, obj)``
    makes of it) under ``name``; a name is registered once. ``get(name)`` returns the entry or
    raises ValueError listing the valid names; ``names()`` lists them sorted.

    >>> colors = Registry("color")
    >>> @colors.register("red")
    ... def red(): return (1, 0, 0)
    >>> colors.names(), colors.get("red")()
    (['red'], (1, 0, 0))
    >>> colors.get("rde")
    Traceback (most recent call last):
    ...
    ValueError: unknown color 'rde' (did you mean 'red'?); available: red
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind  # what an entry is called in messages
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Add ``entry`` under ``name`` (ValueError when the name is taken); return it."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"{self.kind} name must be a non-empty str, got {name!r}")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def register(self, name: str, wrap: Callable[[str, T], T] | None = None) -> Callable[[T], T]:
        """Decorator: ``@registry.register(name)`` adds the decorated object (``wrap(name, obj)``'s
        result when given) and returns the object unchanged."""

        def deco(obj: T) -> T:
            self.add(name, obj if wrap is None else wrap(name, obj))
            return obj

        return deco

    def discard(self, name: str) -> None:
        """Remove the entry under ``name`` if there is one (a test's throwaway entry)."""
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        """The entry under ``name``; ValueError naming the valid ones when there is none."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            hint = did_you_mean(name, self._entries) if isinstance(name, str) else ""
            raise ValueError(f"unknown {self.kind} {name!r}{hint}; available: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        """(name, entry) pairs sorted by name."""
        return sorted(self._entries.items())

    def values(self) -> list[T]:
        """The entries, sorted by name."""
        return [entry for _, entry in self.items()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"
