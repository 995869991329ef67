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
is refused (``FileExistsError``). A resume continues with the config the run saved
in ``config.json`` (``divmin run NAME --out DIR --resume`` needs no ``--set``);
``--set`` / ``--full`` apply on top of it, and a change to any key but those a
resume may change (:data:`divmin.engine.RESUME_SAFE`: extending
``engine.max_steps``, checkpoint cadence, progress and logging display) is
refused naming the keys. The config, the directory, its lock and the resume rules are
:mod:`divmin.engine.runs`' (:class:`~divmin.engine.RunDir`), shared with ``divmin train``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import torch

from ..engine import RunDir, is_main_process, parse_overrides
from ..registry import Registry
from ._runs import recipe_scope

__all__ = [
    "Recipe",
    "RecipeResult",
    "available_recipes",
    "format_table",
    "get_recipe",
    "is_main_process",
    "parse_overrides",
    "RECIPES",
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


RECIPES: Registry[Recipe] = Registry("recipe")


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
    return RECIPES.register(name, lambda name, fn: Recipe(name, config_cls, fn, summary, full_size, threads))


def available_recipes() -> list[str]:
    return RECIPES.names()


def get_recipe(name: str) -> Recipe:
    return RECIPES.get(name)


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
    run_dir = RunDir(out_dir, kind="recipe", name=name, config_file="config.json")
    config = run_dir.config(rec.config_cls, None, (*(rec.full_size if full else ()), *overrides), resume=resume)
    if resume and not hasattr(config, "resume"):
        raise ValueError(f"recipe {name!r} does not resume (its runs are short and restart); run it without --resume")
    out = run_dir.out
    if hasattr(config, "resume"):
        config = dataclasses.replace(config, resume=resume)
        if resume and not any(out.glob("**/checkpoints/step_*")):
            warnings.warn(f"resume: no checkpoint under {out}; running {name!r} from the beginning",
                          RuntimeWarning, stacklevel=2)
    # one run per directory: a second run into a directory in use is refused (engine.run_lock)
    with run_dir.open() as main:
        if main:
            run_dir.write_config(config)
        with torch_threads(getattr(config, "num_threads", rec.threads)), recipe_scope(name, out):
            result = rec.run(config, out)
        if main:
            run_dir.write_json("results.json", {
                "recipe": name, "processes": int(os.environ.get("WORLD_SIZE", "1")), "columns": result.columns,
                "rows": result.rows, "plots": result.plots, "summary": result.summary})
    return result


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
