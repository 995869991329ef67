"""The ``divmin train`` and ``divmin export`` commands (``divmin.cli`` registers them)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..engine import available_methods, get_method, latest_checkpoint
from ..lm import ModelLoadError
from ._run import config_from, export_run, prepare, print_config, read_run_config, run_prepared

__all__ = ["add_arguments", "export_command", "train_command"]

# what a user can get wrong before training starts: one line on stderr, exit 2
_USER_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError, NotADirectoryError, ModelLoadError)


def add_arguments(train: argparse.ArgumentParser, export: argparse.ArgumentParser) -> None:
    train.add_argument("method", help="method name (kd, fdpo, ...: `divmin train list`)")
    train.add_argument("--config", metavar="FILE.yaml", help="YAML config (see --print-config)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value (Python literal; dotted keys reach nested sections: "
                            "kd.engine.max_steps=10); applied after --config")
    train.add_argument("--out", help="run directory (checkpoints, metrics, final/ export)")
    train.add_argument("--print-config", action="store_true", help="print a commented example config and exit")
    train.add_argument("--resume", action="store_true", help="resume from the latest checkpoint in --out")
    export.add_argument("run_dir", help="a `divmin train` run directory")


def _error(err: BaseException) -> int:
    print(f"divmin: error: {err}", file=sys.stderr)
    return 2


def _list() -> int:
    names = available_methods()
    width = max(map(len, names))
    for name in names:
        print(f"{name.ljust(width)}  {get_method(name).summary}")
    return 0


def train_command(args: argparse.Namespace) -> int:
    if args.method == "list":
        return _list()
    try:
        m = get_method(args.method)
        if args.print_config:
            print(print_config(m), end="")
            return 0
        if not args.out:
            raise ValueError("--out is required (the run directory)")
        config = config_from(m, args.config, args.set, resume_dir=args.out if args.resume else None)
        prepared = prepare(m, config, args.out, resume=args.resume)
    except _USER_ERRORS as err:
        return _error(err)
    run = run_prepared(prepared, resume=args.resume)
    if run.files:
        _report(Path(args.out), run.files)
    return 0


def _report(out: Path, files: list[Path]) -> None:
    written = [out / n for n in ("train_config.yaml", "metrics.jsonl") if (out / n).is_file()]
    ckpts = sorted((out / "checkpoints").glob("step_*"))
    print("wrote " + ", ".join(map(str, written + ckpts[-1:])))
    print(f"exported {out / 'final'}: " + ", ".join(p.name for p in files))


def export_command(args: argparse.Namespace) -> int:
    try:
        read_run_config(args.run_dir)  # not a run directory: say that first
        ckpt = latest_checkpoint(args.run_dir)  # verified once, here: export_run is told which one
        if ckpt is None:
            raise ValueError(f"{args.run_dir}: no checkpoint to export (checkpoints/step_*)")
        files = export_run(args.run_dir, checkpoint=ckpt)
    except _USER_ERRORS as err:
        return _error(err)
    print(f"exported {Path(args.run_dir) / 'final'} from {ckpt}: " + ", ".join(p.name for p in files))
    return 0
