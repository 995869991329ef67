"""Run a registered method into a run directory, export it, and re-export from a checkpoint.

``RUN_DIR`` after ``divmin train METHOD --out RUN_DIR``::

    train_config.yaml        the full config (method included): `divmin export` rebuilds from it
    metrics.jsonl, tensorboard/, checkpoints/step_*/   the engine's (a checkpoint at the last step at least)
    final/                   the exported model (see divmin.engine.export_hf / export_module)

The config, the directory, the lock and ``--resume`` are :mod:`divmin.engine.runs`' (as for
``divmin run``): ``divmin train METHOD --out RUN_DIR --resume`` continues with the config saved in
``train_config.yaml``; ``--config`` / ``--set`` given apply on top of it, and a change to any key but
those a resume may change (:data:`divmin.engine.RESUME_SAFE`, of the method's engine: extending
``kd.engine.max_steps``, checkpoint cadence, display) is refused naming the keys.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, NamedTuple, Sequence

from torch import nn

from ..engine import EngineConfig, MethodTrainer, Models, RunDir, TrainMethod, apply_values, default_checkpoint_every
from ..engine import example_config, get_method, latest_checkpoint, load_config, resume_changes

__all__ = ["Prepared", "TrainRun", "config_from", "export_run", "prepare", "print_config", "read_run_config", "run_dir_of",
           "run_prepared", "train"]

CONFIG_FILE = "train_config.yaml"


class TrainRun(NamedTuple):
    """What :func:`train` returns: the trainer, the trained model, its models and the files exported."""

    trainer: MethodTrainer
    model: nn.Module
    models: Models
    files: list[Path]


def _method(method: str | TrainMethod) -> TrainMethod:
    return method if isinstance(method, TrainMethod) else get_method(method)


def run_dir_of(method: str | TrainMethod, out_dir: str | Path) -> RunDir:
    """The :class:`~divmin.engine.RunDir` of a run of ``method`` in ``out_dir``."""
    return RunDir(out_dir, kind="method", name=_method(method).name, config_file=CONFIG_FILE)


def engine_key(config: Any, method: str) -> str:
    """The dotted key of the run's engine: the nested method config's (``kd.engine``), or ``engine``."""
    return "engine" if isinstance(getattr(config, "engine", None), EngineConfig) else f"{method}.engine"


def _engine(config: Any, key: str) -> EngineConfig:
    for part in key.split("."):
        config = getattr(config, part)
    return config


def _with_run_dir(config: Any, out: Path, method: str) -> Any:
    key = engine_key(config, method)
    engine = _engine(config, key)
    engine = dataclasses.replace(engine, out_dir=str(out), label=engine.label or method)
    if engine.checkpoint_every is None:
        # every quarter of the run, on a log step (as the recipes): an interruption loses at most a
        # quarter, and the engine also checkpoints the last step, which `divmin export` reads
        engine = dataclasses.replace(engine, checkpoint_every=default_checkpoint_every(engine.max_steps,
                                                                                       engine.log_every))
    return apply_values(config, [(key, engine)], source="--out")


class Prepared(NamedTuple):
    """A run ready to train (what :func:`prepare` checked and built)."""

    method: TrainMethod
    run_dir: RunDir
    config: Any  # with the run directory set in its engine
    models: Models
    trainer: MethodTrainer


def prepare(method: str | TrainMethod, config: Any, out_dir: str | Path, *, resume: bool = False) -> Prepared:
    """Everything a user can get wrong (keys, values, models, data, a used run directory) fails here,
    before any file is written."""
    m, run_dir = _method(method), run_dir_of(method, out_dir)
    if not isinstance(config, m.config_cls):
        raise TypeError(f"`config` must be a {m.config_cls.__name__} for method {m.name!r}, got {type(config).__name__}")
    if not resume and latest_checkpoint(run_dir.out, verify=False) is not None:  # before the config is replaced
        raise FileExistsError(f"{run_dir.out} already holds a run (checkpoints/); continue it with --resume, "
                              "re-export it with `divmin export`, or choose another --out")
    config = _with_run_dir(config, run_dir.out, m.name)
    saved = run_dir.saved(m.config_cls) if resume else None
    if saved is not None:
        resume_changes(_with_run_dir(saved, run_dir.out, m.name), config, where=str(run_dir.config_path))
    models = m.models(config, training=True)
    return Prepared(m, run_dir, config, models, m.trainer(config, models))


def run_prepared(run: Prepared, *, resume: bool = False) -> TrainRun:
    """Train, then export (the main process), holding the run directory."""
    m, run_dir = run.method, run.run_dir
    with run_dir.open() as main:
        if main:
            run_dir.write_config(run.config)
        run.trainer.fit(resume=resume)
        model = m.trained(run.trainer)
        files = m.export(model, run.models, run.config, run_dir.out) if main else []
    return TrainRun(run.trainer, model, run.models, files)


def train(method: str | TrainMethod, config: Any, out_dir: str | Path, *, resume: bool = False) -> TrainRun:
    """Train ``method`` with ``config`` into ``out_dir`` and export the model to ``out_dir/final``."""
    return run_prepared(prepare(method, config, out_dir, resume=resume), resume=resume)


def read_run_config(run_dir: str | Path) -> tuple[TrainMethod, Any]:
    """(method, config) of the run in ``run_dir`` (from its ``train_config.yaml``)."""
    found = RunDir(run_dir, kind="method", name="", config_file=CONFIG_FILE).read()
    if found is None:
        raise ValueError(f"{run_dir}: no {CONFIG_FILE}; is it a `divmin train` run directory?")
    m = get_method(found[0] or "")
    return m, run_dir_of(m, run_dir).saved(m.config_cls)


def export_run(run_dir: str | Path, *, checkpoint: str | Path | None = None) -> list[Path]:
    """Re-export the run in ``run_dir`` from ``checkpoint`` (default: its latest intact one) to ``run_dir/final``."""
    m, config = read_run_config(run_dir)
    ckpt = Path(checkpoint) if checkpoint is not None else latest_checkpoint(run_dir)
    if ckpt is None:
        raise ValueError(f"{run_dir}: no checkpoint to export (checkpoints/step_*)")
    models = m.models(config, training=False)
    return m.export(m.restore(models, ckpt), models, config, Path(run_dir))


def print_config(method: str | TrainMethod) -> str:
    """A commented example config of ``method``: every key, at its default."""
    m = _method(method)
    key = engine_key(m.config_cls(), m.name)
    header = (f"divmin train {m.name}: {m.summary}\n"
              f"Run: divmin train {m.name} --config this.yaml --out runs/{m.name} [--set key=value ...]\n"
              f"Every key is optional (the default is shown); nested sections take dotted --set keys "
              f"({key}.max_steps=10).")
    first = ("model", "teacher", "ref_model", "tokenizer", "data", "eval_data", "lora", "merge_lora")
    return example_config(m.config_cls(), header, first)


def config_from(method: str | TrainMethod, config_path: str | Path | None = None, overrides: Sequence[str] = (), *,
                resume_dir: str | Path | None = None) -> Any:
    """The config of ``method`` from a YAML file and ``--set`` overrides (either optional), applied on top
    of the config the run in ``resume_dir`` saved (when resuming one), else on the defaults."""
    m = _method(method)
    base = run_dir_of(m, resume_dir).saved(m.config_cls) if resume_dir is not None else None
    return load_config(m.config_cls, config_path, overrides, base=base)
