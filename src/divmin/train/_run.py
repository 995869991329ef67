"""Run a registered method into a run directory, export it, and re-export from a checkpoint.

``RUN_DIR`` after ``divmin train METHOD --out RUN_DIR``::

    train_config.yaml        the full config (method included): `divmin export` rebuilds from it
    metrics.jsonl, tensorboard/, checkpoints/step_*/   the engine's (a checkpoint at the last step at least)
    final/                   the exported model (see divmin.engine._export)

Under ``torchrun`` / ``accelerate launch`` every process builds the models and trains (the
engine averages the gradients); only the main process (RANK 0) writes the config and the export.

Resuming (``--resume``) continues the run with the config saved in ``train_config.yaml``:
``divmin train METHOD --out RUN_DIR --resume`` needs no ``--config`` / ``--set``, and those given
apply on top of the saved config; a change to any key but those a resume may change
(:data:`divmin.engine._overrides.RESUME_SAFE`: extending ``engine.max_steps``, checkpoint
cadence, progress and logging display) is refused naming the keys.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import yaml
from torch import nn

from ..engine import MethodTrainer, atomic_write, default_checkpoint_every, latest_checkpoint, run_lock
from ..engine import apply_values, jsonable, resume_changes
from ._config import example_config, flatten, load_config
from ._registry import Models, get_method

__all__ = ["TrainRun", "export_run", "print_config", "train"]

CONFIG_FILE = "train_config.yaml"


class TrainRun(NamedTuple):
    """What :func:`train` returns: the trainer, the trained model, its models and the files exported."""

    trainer: MethodTrainer
    model: nn.Module
    models: Models
    files: list[Path]


def _is_main() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _engine_owner(config: Any, method: str) -> tuple[str | None, Any]:
    """(field, config) holding the run's engine config: (None, config) when ``config`` has an ``engine``,
    else the method config nested under the method's name (``depict.engine``)."""
    return (None, config) if hasattr(config, "engine") else (method, getattr(config, method))


def _with_run_dir(config: Any, out: Path, method: str) -> Any:
    field, owner = _engine_owner(config, method)
    engine = dataclasses.replace(owner.engine, out_dir=str(out), label=owner.engine.label or method)
    if engine.checkpoint_every is None:
        # every quarter of the run, on a log step (as the recipes): an interruption loses at most a
        # quarter, and the engine also checkpoints the last step, which `divmin export` reads
        engine = dataclasses.replace(engine, checkpoint_every=default_checkpoint_every(engine.max_steps,
                                                                                       engine.log_every))
    owner = dataclasses.replace(owner, engine=engine)
    return owner if field is None else dataclasses.replace(config, **{field: owner})


def prepare(method: str, config: Any, out_dir: str | Path, *, resume: bool = False
            ) -> tuple[Any, Any, Models, MethodTrainer]:
    """(method, config with the run directory set, models, trainer): everything a user can get wrong
    (names, keys, values, models, data, a used run directory) fails here, before any file is written."""
    m = get_method(method)
    if not isinstance(config, m.config_cls):
        raise TypeError(f"`config` must be a {m.config_cls.__name__} for method {method!r}, got {type(config).__name__}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file; name a directory")
    if not resume and latest_checkpoint(out, verify=False) is not None:  # before train_config.yaml is replaced
        raise FileExistsError(f"{out} already holds a run (checkpoints/); continue it with --resume, "
                              "re-export it with `divmin export`, or choose another --out")
    config = _with_run_dir(config, out, method)
    saved = saved_config(out, method) if resume else None
    if saved is not None:
        resume_changes(_with_run_dir(saved, out, method), config, where=str(out / CONFIG_FILE))
    models = m.models(config, training=True)
    return m, config, models, m.trainer(config, models)


def train(method: str, config: Any, out_dir: str | Path, *, resume: bool = False) -> TrainRun:
    """Train ``method`` with ``config`` into ``out_dir`` and export the model to ``out_dir/final``."""
    m, config, models, trainer = prepare(method, config, out_dir, resume=resume)
    return run_prepared(m, config, models, trainer, Path(out_dir), resume=resume)


def run_prepared(m: Any, config: Any, models: Models, trainer: MethodTrainer, out: Path, *,
                 resume: bool = False) -> TrainRun:
    main = _is_main()
    if main:
        out.mkdir(parents=True, exist_ok=True)
    with run_lock(out) if main else contextlib.nullcontext():
        if main:
            text = yaml.safe_dump({"method": m.name, **jsonable(config)}, sort_keys=False)
            atomic_write(out / CONFIG_FILE, text)
        trainer.fit(resume=resume)
        model = m.trained(trainer)
        files = m.export(model, models, config, out) if main else []
    return TrainRun(trainer, model, models, files)


def read_run_config(run_dir: str | Path) -> tuple[Any, Any]:
    """(method, config) of the run in ``run_dir`` (from its ``train_config.yaml``)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise ValueError(f"{run_dir}: no {CONFIG_FILE}; is it a `divmin train` run directory?")
    tree = yaml.safe_load(path.read_text()) or {}
    m = get_method(tree.pop("method", ""))
    return m, apply_values(m.config_cls(), flatten(tree), source=str(path))


def saved_config(run_dir: str | Path, method: str) -> Any | None:
    """The config a run of ``method`` in ``run_dir`` saved (None when it has none: it never started)."""
    if not (Path(run_dir) / CONFIG_FILE).is_file():
        return None
    m, config = read_run_config(run_dir)
    if m.name != method:
        raise ValueError(f"`--resume`: {run_dir} holds a run of method {m.name!r}, not {method!r}")
    return config


def export_run(run_dir: str | Path, *, checkpoint: str | Path | None = None) -> list[Path]:
    """Re-export the run in ``run_dir`` from ``checkpoint`` (default: its latest intact one) to ``run_dir/final``."""
    m, config = read_run_config(run_dir)
    ckpt = Path(checkpoint) if checkpoint is not None else latest_checkpoint(run_dir)
    if ckpt is None:
        raise ValueError(f"{run_dir}: no checkpoint to export (checkpoints/step_*)")
    models = m.models(config, training=False)
    return m.export(m.restore(models, ckpt), models, config, Path(run_dir))


def print_config(method: str) -> str:
    """A commented example config of ``method``: every key, at its default."""
    m = get_method(method)
    header = (f"divmin train {method}: {m.summary}\n"
              f"Run: divmin train {method} --config this.yaml --out runs/{method} [--set key=value ...]\n"
              "Every key is optional (the default is shown); nested sections take dotted --set keys (engine.max_steps=10).")
    first = ("model", "teacher", "ref_model", "tokenizer", "data", "eval_data", "lora", "merge_lora")
    return example_config(m.config_cls(), header, first)


def config_from(method: str, config_path: str | None, overrides: Sequence[str], *,
                resume_dir: str | Path | None = None) -> Any:
    """The config of ``method`` from a YAML file and ``--set`` overrides (either optional), applied on top
    of the config the run in ``resume_dir`` saved (when resuming one), else on the defaults."""
    base = saved_config(resume_dir, method) if resume_dir is not None else None
    return load_config(get_method(method).config_cls, config_path, overrides, base=base)
