"""Runs of the runnable things: their config from ``--config`` / ``--set``, and their run directory.

``divmin run RECIPE`` and ``divmin train METHOD`` go through this one module:

- **config**: :func:`load_config` starts from the defaults (or the config a resumed run saved),
  applies a YAML file (``yaml.safe_load``: no object tags; every key goes through
  :func:`apply_values`, the code path of ``--set``, so a file and the same ``--set key=value`` give
  the same config and the same errors), then ``key=value`` overrides (:func:`parse_overrides`;
  dotted keys reach nested configs: ``kd.engine.max_steps=10``);
- **run directory** (:class:`RunDir`): ``--out`` must be a directory; one run at a time writes in
  it (:func:`run_lock`); the config is recorded in it (``config.json`` for a recipe,
  ``train_config.yaml`` for a method), naming the runnable; ``--resume`` continues with that
  saved config, and refuses (:func:`resume_changes`) a change to any key but those a resume may
  change (:data:`RESUME_SAFE`: extending ``engine.max_steps``, checkpoint cadence, display).

Under ``torchrun`` / ``accelerate launch`` every process runs; only the main process
(:func:`is_main_process`) creates the directory and writes files.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import yaml

from ._lock import run_lock
from ._overrides import (
    RESUME_SAFE,
    apply_values,
    config_items,
    config_keys,
    jsonable,
    parse_overrides,
    parse_value,
    resume_changes,
    tree_items,
)
from ._safe_io import atomic_write

__all__ = ["RESUME_SAFE", "RunDir", "apply_values", "config_items", "config_keys", "flatten", "is_main_process",
           "jsonable", "load_config", "parse_overrides", "parse_value", "read_yaml", "resume_changes", "tree_items"]


def is_main_process() -> bool:
    """True unless this is a non-zero rank of a ``torchrun`` / ``accelerate launch`` job (which sets RANK)."""
    return os.environ.get("RANK", "0") == "0"


def flatten(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``{"engine": {"max_steps": 3}}`` -> ``[("engine.max_steps", 3)]`` (lists stay values).

    >>> flatten({"kd": {"lr": 0.1, "engine": {"max_steps": 3}}, "model": None})
    [('kd.lr', 0.1), ('kd.engine.max_steps', 3), ('model', None)]
    """
    if not isinstance(tree, dict):
        return [(prefix.rstrip("."), tree)]
    out = []
    for key, value in tree.items():
        if not isinstance(key, str):
            raise ValueError(f"config key {key!r} must be a string")
        if isinstance(value, dict):  # a section (an empty one changes nothing)
            out += flatten(value, f"{prefix}{key}.") if value else []
        else:
            out.append((prefix + key, value))
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in the YAML file ``path`` (``yaml.safe_load``); one ValueError line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--config {path}: no such file")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ValueError(f"--config {path}: not valid YAML{where}") from None
    if tree is not None and not isinstance(tree, dict):
        raise ValueError(f"--config {path}: must hold a mapping of config keys, got {type(tree).__name__}")
    return tree or {}


def load_config(config_cls: type, path: str | Path | None = None, overrides: Sequence[str] = (), *,
                base: Any = None) -> Any:
    """``base`` (default ``config_cls()``) updated by the YAML file at ``path`` (if any), then by
    ``key=value`` overrides."""
    config = config_cls() if base is None else base
    if path is not None:
        config = apply_values(config, flatten(read_yaml(path)), source=Path(path).name)
    return parse_overrides(config, overrides)


class RunDir:
    """The run directory ``out`` of runnable ``name`` (a ``kind``: "recipe", "method"), whose config is
    recorded in ``out/config_file``: JSON ``{kind: name, "config": {...}}`` for a ``.json`` file, YAML
    ``{kind: name, key: value...}`` for a ``.yaml`` one."""

    def __init__(self, out: str | Path, *, kind: str, name: str, config_file: str) -> None:
        self.out, self.kind, self.name = Path(out), kind, name
        self.config_path = self.out / config_file
        if self.out.exists() and not self.out.is_dir():
            raise NotADirectoryError(f"--out {self.out} is a file; name a directory")

    def read(self) -> tuple[Any, dict[str, Any]] | None:
        """(the runnable's name, the config tree) recorded in the directory; None when there is none."""
        path = self.config_path
        if not path.is_file():
            return None
        try:
            text = path.read_text(encoding="utf-8")
            saved = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as err:
            raise ValueError(f"`--resume`: {path} is unreadable ({type(err).__name__}: {err})") from None
        if not isinstance(saved, dict):
            raise ValueError(f"`--resume`: {path} must hold a mapping, got {type(saved).__name__}")
        saved = dict(saved)
        name = saved.pop(self.kind, None)
        tree = saved.get("config", {}) if path.suffix == ".json" else saved
        return name, tree

    def saved(self, config_cls: type) -> Any:
        """The config the run in the directory saved (None when it has none: it never started); ValueError
        when it is a run of another runnable."""
        found = self.read()
        if found is None:
            return None
        name, tree = found
        if name != self.name:
            raise ValueError(f"`--resume`: {self.config_path} is not a run of {self.kind} {self.name!r} "
                             f"(it names {name!r})")
        base = config_cls()
        return apply_values(base, tree_items(base, tree), source=str(self.config_path))

    def config(self, config_cls: type, path: str | Path | None = None, overrides: Sequence[str] = (), *,
               resume: bool = False) -> Any:
        """The run's config: the YAML file ``path`` and ``overrides`` on the defaults, or, when resuming, on
        the config the run saved (a change a resume may not make is refused, naming the keys)."""
        saved = self.saved(config_cls) if resume else None
        config = load_config(config_cls, path, overrides, base=saved)
        if saved is not None:
            resume_changes(saved, config, where=str(self.config_path))
        return config

    @contextlib.contextmanager
    def open(self) -> Iterator[bool]:
        """Hold the directory for the run (created, :func:`run_lock`) on the main process; yields whether
        this process writes files."""
        main = is_main_process()
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
        with run_lock(self.out) if main else contextlib.nullcontext():
            yield main

    def write_config(self, config: Any) -> None:
        """Record ``config`` (the main process's call) in the directory's config file."""
        if self.config_path.suffix == ".json":
            text = json.dumps({self.kind: self.name, "config": jsonable(config)}, indent=2)
        else:
            text = yaml.safe_dump({self.kind: self.name, **jsonable(config)}, sort_keys=False)
        atomic_write(self.config_path, text)

    def write_json(self, filename: str, payload: Any) -> None:
        """Write ``payload`` (made JSON-ready) to ``out/filename`` atomically."""
        atomic_write(self.out / filename, json.dumps(jsonable(payload), indent=2))
