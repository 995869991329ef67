"""`deprecated_aliases`: former public names kept for one release, warning on each use."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

__all__ = ["deprecated_aliases"]


def deprecated_aliases(namespace: dict[str, Any], **renames: str) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` resolving each former name ``old=“New”`` to ``namespace[New]``
    with a DeprecationWarning; any other missing name raises AttributeError as usual.

    Use in a package ``__init__``: ``__getattr__ = deprecated_aliases(globals(), FDistill="FDistillTrainer")``.
    The new name is looked up at call time, so the alias is always the same object.
    """
    module = namespace.get("__name__", "?")
    for old, new in renames.items():
        if not isinstance(new, str) or not new.isidentifier():
            raise TypeError(f"`{old}` must name the new attribute as a string, got {new!r}")

    def __getattr__(name: str) -> Any:
        if name in renames:
            new = renames[name]
            warnings.warn(f"`{module}.{name}` is deprecated and will be removed; use `{new}`",
                          DeprecationWarning, stacklevel=2)
            return namespace[new]
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
