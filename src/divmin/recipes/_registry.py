"""Recipes: one reproduced claim each, runnable from the CLI.

A recipe is a function ``run(config, out_dir) -> RecipeResult`` registered with
its config dataclass::

    @recipe("fit", FitConfig, "Fit a Gaussian mixture with every divergence",
            full_size=("engine.max_steps=1500",))
    def run_fit(config: FitConfig, out_dir: Path) -> RecipeResult: ...

:func:`run_recipe` writes ``config.json``, calls the recipe (which trains through
the engine, writing ``metrics.jsonl`` and plots), then writes ``results.json``
and returns the result, whose table the CLI prints; ``results.json`` also says
how many processes trained (``processes``). ``full_size`` is the recipe's named
preset for the full-size run (``divmin run NAME --full``).

Under ``torchrun``/``accelerate launch`` every process runs the recipe (the
engine averages gradients); only the main process writes files (``config.json``,
``results.json``, figures through :mod:`._plots`, see :func:`is_main_process`).
Torch intra-op threads are bounded for the run (``threads``, or the config's
``num_threads`` field), and to one share of the cores per local process.

Checkpoints and resume: a recipe that trains has a ``resume: bool = False``
config field and builds every run's engine with :func:`._runs.run_engine`, so
each training run (teacher, warm-up, one per method and seed...) writes
``checkpoints/`` in its own directory under ``out_dir``, every quarter of its
steps rounded down to a multiple of ``log_every`` (at least ``log_every``;
:func:`._runs.default_checkpoint_every`) and at its last step, unless
``engine.checkpoint_every`` is set. ``run_recipe(..., resume=True)``
(``divmin run NAME --out DIR --resume``) resumes every run from its latest
checkpoint, finished runs included, and so reproduces the uninterrupted run's
table exactly; without ``resume``, a directory that already holds checkpoints
is refused (``FileExistsError``).
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import json
import os
import types
import typing
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import torch

from ..engine import run_lock
from ._runs import recipe_scope

__all__ = [
    "Recipe",
    "RecipeResult",
    "available_recipes",
    "format_table",
    "get_recipe",
    "is_main_process",
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
    full_size: tuple[str, ...] = ()  # --set overrides of the full-size run (`divmin run NAME --full`)
    threads: int = 1  # torch intra-op threads of a run (unless the config has a `num_threads` field)


_RECIPES: dict[str, Recipe] = {}


def recipe(name: str, config_cls: type, summary: str, *, full_size: Sequence[str] = (),
           threads: int = 1) -> Callable[[Callable], Callable]:
    """Register ``run(config, out_dir) -> RecipeResult`` under ``name``.

    ``full_size``: ``key=value`` overrides of the full-size run (checked here against
    ``config_cls``); ``threads``: torch intra-op threads a run uses (1 suits tiny models).
    """
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"recipe {name!r}: `config_cls` must be a dataclass")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"recipe {name!r}: `threads` must be an int >= 1, got {threads!r}")
    full_size = tuple(full_size)
    parse_overrides(config_cls(), full_size)  # a bad preset fails at import, not at the end of a long run

    def deco(fn: Callable[[Any, Path], RecipeResult]) -> Callable[[Any, Path], RecipeResult]:
        if name in _RECIPES:
            raise ValueError(f"recipe {name!r} is already registered")
        _RECIPES[name] = Recipe(name, config_cls, fn, summary, full_size, threads)
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
            raise ValueError(f"--set {key}: expected a tuple, got {value!r}; write {key}=({value!r},)")
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


def run_recipe(name: str, out_dir: str | Path, overrides: Sequence[str] = (), *, resume: bool = False,
               full: bool = False) -> RecipeResult:
    """Run recipe ``name`` into ``out_dir``; see the module docstring for what is written.

    ``full``: apply the recipe's ``full_size`` preset first (``overrides`` still win).
    """
    rec = get_recipe(name)
    config = parse_overrides(rec.config_cls(), (*(rec.full_size if full else ()), *overrides))
    if resume and not hasattr(config, "resume"):
        raise ValueError(f"recipe {name!r} does not resume (its runs are short and restart); run it without --resume")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file; name a directory")
    out.mkdir(parents=True, exist_ok=True)
    if hasattr(config, "resume"):
        config = dataclasses.replace(config, resume=resume)
        if resume and not any(out.glob("**/checkpoints/step_*")):
            warnings.warn(f"resume: no checkpoint under {out}; running {name!r} from the beginning",
                          RuntimeWarning, stacklevel=2)
    main = is_main_process()
    # one run per directory: a second run into a directory in use is refused (engine.run_lock)
    with run_lock(out) if main else contextlib.nullcontext():
        if main:
            (out / "config.json").write_text(json.dumps({"recipe": name, "config": _jsonable(config)}, indent=2))
        with torch_threads(getattr(config, "num_threads", rec.threads)), recipe_scope(name, out):
            result = rec.run(config, out)
        if main:
            payload = {"recipe": name, "processes": int(os.environ.get("WORLD_SIZE", "1")), "columns": result.columns,
                       "rows": _jsonable(result.rows), "plots": result.plots, "summary": _jsonable(result.summary)}
            (out / "results.json").write_text(json.dumps(payload, indent=2))
    return result


def is_main_process() -> bool:
    """True unless this is a non-zero rank of a ``torchrun`` / ``accelerate launch`` job (which sets RANK)."""
    return os.environ.get("RANK", "0") == "0"


def _cores_per_process() -> int:
    """This process's share of the cores it may run on: all of them, or 1/k of them under k local processes."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, cores // max(local, 1))


def check_num_threads(n: Any) -> None:
    """The ``num_threads`` field of a recipe config: None (leave torch's setting) or an int >= 1."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"`num_threads` must be None or an int >= 1, got {n!r}")


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (None: leave as is), then restore.

    ``n`` is capped at this process's share of the cores (one core each for two
    processes on two cores), so that no run oversubscribes the machine. Tiny
    models run fastest on one thread, and do not fight other processes for cores.
    """
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(min(n, _cores_per_process()))
    try:
        yield
    finally:
        torch.set_num_threads(before)
