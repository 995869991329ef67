"""Config overrides shared by ``divmin run`` (recipes) and ``divmin train``: ``key=value`` strings
and already-parsed values (a YAML file), applied to a config dataclass with its annotations checked.

Dotted keys reach nested dataclasses (``engine.max_steps``). Every replacement goes through
``dataclasses.replace``, so the config's own ``__post_init__`` checks (``divmin.engine.validate``)
run on the result: a bad value gets the same error however it was given.
"""

from __future__ import annotations

import ast
import dataclasses
import types
import typing
from typing import Any, Sequence

from ..registry import did_you_mean

__all__ = ["RESUME_SAFE", "apply_values", "config_items", "config_keys", "jsonable", "parse_overrides", "parse_value",
           "resume_changes", "tree_items"]


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(key: str, value: Any, hint: Any, where: str = "") -> Any:
    """Check a literal against a field's annotation (int -> float allowed, tuples from lists)."""
    where = where or f"--set {key}"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for h in args:
            try:
                return _coerce(key, value, h, where)
            except (TypeError, ValueError):
                continue
        raise ValueError(f"{where}: {value!r} does not match {hint}")
    if hint is type(None):
        if value is None:
            return None
        raise ValueError(f"{where}: expected None")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a tuple, got {value!r}; write {key}=({value!r},)")
        if origin is tuple and args and args[-1] is not Ellipsis:  # fixed length: one hint per position
            if len(value) != len(args):
                raise ValueError(f"{where}: expected {len(args)} items, got {value!r}")
            return tuple(_coerce(key, v, h, where) for v, h in zip(value, args))
        inner = args[0] if args else Any
        items = [_coerce(key, v, inner, where) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is typing.Literal:
        if value in args:
            return value
        raise ValueError(f"{where}: {value!r} is not one of {args}")
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(hint, type) and isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    name = getattr(hint, "__name__", str(hint))
    article = "an" if name[:1].lower() in "aeiou" else "a"
    raise ValueError(f"{where}: {value!r} is not {article} {name}")


def parse_value(raw: str) -> Any:
    """A Python literal (no code is executed); anything else is taken as a plain string."""
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def parse_overrides(config: Any, overrides: Sequence[str]) -> Any:
    """Apply ``key=value`` strings (dotted keys reach nested dataclasses) to a config dataclass."""
    items = []
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        items.append((key.strip(), parse_value(raw.strip()), ""))
    return _apply(config, items)


def apply_values(config: Any, items: Sequence[tuple[str, Any]], *, source: str) -> Any:
    """Apply ``(dotted key, value)`` pairs of parsed values (e.g. from YAML) to a config dataclass.

    ``source`` names where they came from in error messages (``"run.yaml"``).
    """
    return _apply(config, [(key, value, f"config key {key!r} in {source}") for key, value in items])


def _apply(config: Any, items: Sequence[tuple[str, Any, str]]) -> Any:
    """Check every key and type, then build the new config at once: the cross-field rules of
    ``__post_init__`` see the final values, whatever order the keys came in (``model`` then
    ``teacher`` must not fail in between); a key given twice keeps its last value."""
    changes: dict[str, Any] = {}
    for key, value, where in items:
        _collect(config, key.split("."), key, value, where, changes)
    return _build(config, changes)


def _collect(config: Any, path: list[str], key: str, value: Any, where: str, changes: dict[str, Any]) -> None:
    types_ = _field_types(type(config))
    head = path[0]
    if head not in types_:
        hint = did_you_mean(head, types_, prefix=key[:len(key) - len(".".join(path))])
        raise ValueError(f"unknown config key {key!r}{hint}; valid keys: {', '.join(config_keys(type(config)))}")
    if len(path) > 1:
        child = getattr(config, head)
        if not dataclasses.is_dataclass(child):
            raise ValueError(f"config key {head!r} has no sub-keys (in {key!r})")
        sub = changes.get(head)
        if not isinstance(sub, dict):  # a whole nested config given before: start from it
            sub = changes[head] = {} if sub is None else {"": sub}
        _collect(child, path[1:], key, value, where, sub)
        return
    if dataclasses.is_dataclass(getattr(config, head)) and not dataclasses.is_dataclass(value):
        raise ValueError(f"config key {key!r} is a group; set one of its sub-keys (e.g. {key}.<name>=...)")
    changes[head] = _coerce(key, value, types_[head], where)


def _build(config: Any, changes: dict[str, Any]) -> Any:
    if "" in changes:  # a nested config replaced whole, then some of its keys
        config = changes.pop("")
    if not changes:
        return config
    new = {k: _build(getattr(config, k), v) if isinstance(v, dict) else v for k, v in changes.items()}
    return dataclasses.replace(config, **new)


def config_keys(cls: type, prefix: str = "") -> list[str]:
    """Every settable key of a config class, nested dataclasses as dotted keys."""
    out = []
    for name, hint in _field_types(cls).items():
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            out += config_keys(hint, f"{prefix}{name}.")
        else:
            out.append(prefix + name)
    return out


def jsonable(x: Any) -> Any:
    """A JSON-ready copy of a config (dataclasses as dicts, tuples as lists, tensors' items)."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {k: jsonable(v) for k, v in dataclasses.asdict(x).items()}
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    if hasattr(x, "item"):
        return x.item()
    return str(x)


# ------------------------------------------------------------------ resuming a run with its own config
# Keys a resumed run may change (none steers the steps already taken): how far the run goes (max_steps may
# only grow: extending a run), when it checkpoints and what it shows. Every other change would make the
# resumed run a different run from its checkpoints, silently: it is refused.
RESUME_SAFE = ("engine.max_steps", "engine.checkpoint_every", "engine.keep_checkpoints", "engine.progress",
               "engine.label", "engine.tensorboard")
_RESUME_IGNORED = ("resume", "engine.out_dir")  # set by the command itself (--resume, --out), not by the user


def config_items(config: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``(dotted key, JSON-ready value)`` of every leaf field of ``config`` (nested configs recursed into)."""
    out = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out += config_items(value, f"{prefix}{f.name}.")
        else:
            out.append((prefix + f.name, jsonable(value)))
    return out


def tree_items(config: Any, tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """The ``(dotted key, value)`` pairs of a saved JSON/YAML tree of ``config`` (its nested configs recursed
    into, other mappings kept as values), for :func:`apply_values`."""
    if not isinstance(tree, dict):
        raise ValueError(f"saved config {prefix.rstrip('.') or 'root'} must be a mapping, got {type(tree).__name__}")
    out = []
    for key, value in tree.items():
        child = getattr(config, key, None) if isinstance(key, str) else None
        if dataclasses.is_dataclass(child) and isinstance(value, dict):
            out += tree_items(child, value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


def _matches(key: str, keys: tuple[str, ...]) -> bool:
    """``key`` is one of ``keys``, at the top or in a nested config (``fdpo.engine.max_steps``: an engine nested
    in a recipe's method config)."""
    return any(key == k or key.endswith("." + k) for k in keys)


def resume_changes(saved: Any, requested: Any, *, where: str) -> None:
    """Refuse, with one line naming the keys, a resumed run whose ``requested`` config differs from the
    ``saved`` one (the run's own, read from ``where``) other than in :data:`RESUME_SAFE`."""
    before, after = dict(config_items(saved)), dict(config_items(requested))
    changed = [k for k in after if not _matches(k, _RESUME_IGNORED) and before.get(k, after[k]) != after[k]]
    unsafe = [k for k in changed if not _matches(k, RESUME_SAFE)]
    for steps in (k for k in changed if _matches(k, ("engine.max_steps",))):
        if isinstance(before.get(steps), int) and after[steps] < before[steps]:
            unsafe.append(f"{steps} (may only grow, {before[steps]} -> {after[steps]})")
    if unsafe:
        raise ValueError(f"`--resume` continues the run saved in {where} with its own config; --config / --set "
                         f"change {', '.join(unsafe)}: drop them, or start a new run in another --out (keys a "
                         f"resume may change: {', '.join(RESUME_SAFE)})")
