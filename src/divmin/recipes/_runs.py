"""The engine settings of a recipe's training runs: each in its own directory, checkpointed, resumable.

Every training run of a recipe (a teacher, a warm-up, one student per method and
seed...) writes ``metrics.jsonl`` and ``checkpoints/`` under its own directory
of ``--out`` (see :func:`run_engine`), so that ``divmin run NAME --out DIR
--resume`` after an interruption continues every run from its latest checkpoint:
finished runs restore their final weights and RNG state instantly, the
interrupted one replays exactly what it would have done, and the recipe prints
the table of the uninterrupted run.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import json
import os
from pathlib import Path
from typing import Iterator

from ..engine import EngineConfig, default_checkpoint_every, latest_checkpoint
from ..engine import check_not_link

__all__ = ["default_checkpoint_every", "recipe_scope", "resumable", "run_engine", "run_history"]

# (recipe name, its --out resolved) while a recipe runs: labels its training runs' progress bars
_SCOPE: contextvars.ContextVar[tuple[str, Path] | None] = contextvars.ContextVar("divmin_recipe", default=None)


@contextlib.contextmanager
def recipe_scope(name: str, out_dir: str | Path) -> Iterator[None]:
    """While recipe ``name`` runs into ``out_dir``: :func:`run_engine` labels each training run
    ``"<name> <its directory under out_dir>"`` (``run_recipe`` enters it)."""
    token = _SCOPE.set((name, Path(out_dir).resolve()))
    try:
        yield
    finally:
        _SCOPE.reset(token)


def _run_label(out_dir: str | Path) -> str | None:
    scope = _SCOPE.get()
    if scope is None:
        return None
    name, root = scope
    try:
        rel = Path(out_dir).resolve().relative_to(root).as_posix()
    except ValueError:  # a run outside the recipe's --out: name it by its own directory
        rel = Path(out_dir).name
    return name if rel in ("", ".") else f"{name} {rel}"


def _check_no_link_below_out(out_dir: str | Path) -> None:
    """Refuse a run directory that is, or lies under, a link inside the recipe's ``--out`` (its checkpoints
    and metrics would be written where the link points); ``--out`` itself may be a link."""
    scope = _SCOPE.get()
    if scope is None:
        return
    below, path = [], Path(os.path.abspath(out_dir))
    while path.resolve() != scope[1]:
        if path == path.parent:
            return  # not under --out: nothing of the recipe's to guard
        below.append(path)
        path = path.parent
    for p in below:
        check_not_link(p)


def run_engine(engine: EngineConfig, out_dir: str | Path, **changes) -> EngineConfig:
    """``engine`` for one training run writing into ``out_dir``, with ``changes`` (``seed``, ``max_steps``...)
    applied; ``checkpoint_every`` = :func:`default_checkpoint_every` unless the user set it, and ``label``
    (its progress bar's) the recipe and the run's directory under ``--out`` unless the user set it."""
    _check_no_link_below_out(out_dir)
    engine = dataclasses.replace(engine, out_dir=str(out_dir), **changes)
    if engine.label is None:
        engine = dataclasses.replace(engine, label=_run_label(out_dir))
    if engine.checkpoint_every is None:
        every = default_checkpoint_every(engine.max_steps, engine.log_every)
        engine = dataclasses.replace(engine, checkpoint_every=every)
    return engine


def resumable(engine: EngineConfig, resume: bool) -> bool:
    """The ``resume`` argument of a run's ``fit``/``train``: ``resume`` when the run's directory holds a
    checkpoint; False for a run the interrupted recipe never reached (it starts at step 0 either way,
    and the engine's "no checkpoint" warning would be noise: :func:`run_recipe` warns once instead)."""
    run_dir = engine.run_dir
    return bool(resume and run_dir is not None and latest_checkpoint(run_dir, verify=False) is not None)


def run_history(engine: EngineConfig) -> list[dict]:
    """Every record the run logged, across resumes (its ``metrics.jsonl``; ``TrainResult.history`` holds
    only what the last ``fit`` call logged, nothing for a finished run that was resumed)."""
    path = engine.run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
