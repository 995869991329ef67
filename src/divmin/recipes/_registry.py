"""Recipes: one reproduced claim each, runnable from the CLI.

A recipe is a function ``run(config, out_dir) -> RecipeResult`` registered with
its config dataclass::

    @recipe("fit", FitConfig, "Fit a Gaussian mixture with every divergence")
    def run_fit(config: FitConfig, out_dir: Path) -> RecipeResult: ...

:func:`run_recipe` writes ``config.json``, calls the recipe (which trains through
the engine, writing ``metrics.jsonl`` and plots), then writes ``results.json``
and returns the result, whose table the CLI prints.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import torch

__all__ = [
    "Recipe",
    "RecipeResult",
    "available_recipes",
    "format_table",
    "get_recipe",
    "parse_overrides",
    "recipe",
    "run_recipe",
    "torch_threads",
]


class RecipeResult(NamedTuple):
    """What a recipe returns: its final table as data, and the files it wrote."""

    columns: list[str]  # column order of the table
    rows: list[dict[str, Any]]  # one dict per row, keyed by column
    plots: list[str]  # paths of the figures written
    summary: dict[str, Any] = {}  # recipe-level findings (e.g. whether the claim holds)


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str  # CLI name
    config_cls: type  # the recipe's config dataclass
    run: Callable[[Any, Path], RecipeResult]  # (config, out_dir) -> result
    summary: str  # one line for `divmin recipes`


_RECIPES: dict[str, Recipe] = {}


def recipe(name: str, config_cls: type, summary: str) -> Callable[[Callable], Callable]:
    """Register ``run(config, out_dir) -> RecipeResult`` under ``name``."""
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"recipe {name!r}: `config_cls` must be a dataclass")

    def deco(fn: Callable[[Any, Path], RecipeResult]) -> Callable[[Any, Path], RecipeResult]:
        if name in _RECIPES:
            raise ValueError(f"recipe {name!r} is already registered")
        _RECIPES[name] = Recipe(name, config_cls, fn, summary)
        return fn

    return deco


def available_recipes() -> list[str]:
    return sorted(_RECIPES)


def get_recipe(name: str) -> Recipe:
    try:
        return _RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; available: {', '.join(available_recipes())}") from None


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check a literal against a field's annotation (int -> float allowed, tuples from lists)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for h in args:
            try:
                return _coerce(key, value, h)
            except (TypeError, ValueError):
                continue
        raise ValueError(f"--set {key}: {value!r} does not match {hint}")
    if hint is type(None):
        if value is None:
            return None
        raise ValueError(f"--set {key}: expected None")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            value = (value,)
        if origin is tuple and args and args[-1] is not Ellipsis:  # fixed length: one hint per position
            if len(value) != len(args):
                raise ValueError(f"--set {key}: expected {len(args)} items, got {value!r}")
            return tuple(_coerce(key, v, h) for v, h in zip(value, args))
        inner = args[0] if args else Any
        items = [_coerce(key, v, inner) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is typing.Literal:
        if value in args:
            return value
        raise ValueError(f"--set {key}: {value!r} is not one of {args}")
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(hint, type) and isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise ValueError(f"--set {key}: {value!r} is not a {getattr(hint, '__name__', hint)}")


def _parse_value(raw: str) -> Any:
    """A Python literal (no code is executed); anything else is taken as a plain string."""
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def parse_overrides(config: Any, overrides: Sequence[str]) -> Any:
    """Apply ``key=value`` strings (dotted keys reach nested dataclasses) to a config dataclass."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        config = _replace(config, key.strip().split("."), key.strip(), _parse_value(raw.strip()))
    return config


def _replace(config: Any, path: list[str], key: str, value: Any) -> Any:
    types_ = _field_types(type(config))
    head = path[0]
    if head not in types_:
        raise ValueError(f"unknown config key {key!r}; valid keys: {', '.join(_all_keys(type(config)))}")
    if len(path) > 1:
        child = getattr(config, head)
        if not dataclasses.is_dataclass(child):
            raise ValueError(f"config key {head!r} has no sub-keys (in {key!r})")
        return dataclasses.replace(config, **{head: _replace(child, path[1:], key, value)})
    if dataclasses.is_dataclass(getattr(config, head)) and not dataclasses.is_dataclass(value):
        raise ValueError(f"config key {key!r} is a group; set one of its sub-keys (e.g. {key}.<name>=...)")
    return dataclasses.replace(config, **{head: _coerce(key, value, types_[head])})


def _all_keys(cls: type, prefix: str = "") -> list[str]:
    out = []
    for name, hint in _field_types(cls).items():
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            out += _all_keys(hint, f"{prefix}{name}.")
        else:
            out.append(prefix + name)
    return out


def _jsonable(x: Any) -> Any:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(x).items()}
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    if hasattr(x, "item"):
        return x.item()
    return str(x)


def format_table(result: RecipeResult) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    rows = [[cell(r.get(c, "")) for c in result.columns] for r in result.rows]
    widths = [max(len(x) for x in col) for col in zip(result.columns, *rows)]
    line = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([line(result.columns), line(["-" * w for w in widths]), *map(line, rows)])


def run_recipe(name: str, out_dir: str | Path, overrides: Sequence[str] = (), *, resume: bool = False) -> RecipeResult:
    """Run recipe ``name`` into ``out_dir``; see the module docstring for what is written."""
    rec = get_recipe(name)
    config = parse_overrides(rec.config_cls(), overrides)
    if resume and not hasattr(config, "resume"):
        raise ValueError(f"recipe {name!r} does not resume (its runs are short and restart); run it without --resume")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if hasattr(config, "resume"):
        config = dataclasses.replace(config, resume=resume)
    (out / "config.json").write_text(json.dumps({"recipe": name, "config": _jsonable(config)}, indent=2))
    result = rec.run(config, out)
    payload = {"recipe": name, "columns": result.columns, "rows": _jsonable(result.rows),
               "plots": result.plots, "summary": _jsonable(result.summary)}
    (out / "results.json").write_text(json.dumps(payload, indent=2))
    return result


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (None: leave as is), then restore.

    Tiny models run fastest on one thread, and do not fight other processes for cores.
    """
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
