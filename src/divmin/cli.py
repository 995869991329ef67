"""divmin command line.

    divmin divergences                       the divergence registry as a table
    divmin recipes                           the recipes, one line each (and their full-size preset)
    divmin recipes NAME                      one recipe's config keys, defaults and what they mean
    divmin run RECIPE --out DIR [--set key=value ...] [--full] [--resume] [--seeds S ...]
    divmin distill cache --teacher M --data ROWS --out DIR --top-k K   a teacher's top-k cache on disk
    divmin train METHOD --out DIR [--config FILE.yaml] [--set key=value ...] [--print-config] [--resume]
    divmin export RUN_DIR                    re-export a `divmin train` run to RUN_DIR/final
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Callable, Sequence

from .divergences import available_divergences, divergence
from .registry import Registry

COMMANDS: Registry[Callable[[argparse.Namespace], int]] = Registry("command")
_command = COMMANDS.register


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


@_command("divergences")
def _divergences(args: argparse.Namespace) -> int:
    rows = []
    for name in available_divergences():
        d = divergence(name)
        params = ", ".join(f"{k}={v}" for k, v in d.params.items()) or "-"
        if d.kind == "f":  # the tails of f and h only mean something for f-divergences
            rows.append([name, d.kind, params, "yes" if d.h_bounded else "no", d.behaviour])
        else:
            rows.append([name, d.kind, params, "-", "-"])
    print(_table(["name", "kind", "parameters (default)", "h bounded", "behaviour"], rows))
    print("\nA name takes parameters as a spec: alpha:0.3, sinkhorn:epsilon=0.05,cost=l1")
    return 0


@_command("recipes")
def _recipes(args: argparse.Namespace) -> int:
    from .recipes import available_recipes, get_recipe

    if args.name is not None:
        return _recipe_config(get_recipe(args.name))
    names = available_recipes()
    width = max(map(len, names))
    for name in names:
        rec = get_recipe(name)
        print(f"{name.ljust(width)}  {rec.summary}")
        if rec.full_size:
            sets = " ".join(f"--set \"{o}\"" if " " in o or "(" in o else f"--set {o}" for o in rec.full_size)
            print(f"{'':{width}}  full run: --full ({sets})")
    return 0


def _recipe_config(rec) -> int:
    """One recipe: its summary, full-size preset and every config key with its value and comment."""
    from .engine import describe_config

    print(f"{rec.name}: {rec.summary}")
    if rec.full_size:
        print("full run (--full): " + " ".join(rec.full_size))
    # the value shown is the recipe's default, so a comment's "Default X." (the class's own default) would mislead
    rows = [(f"{key} = {value!r}", re.sub(r"\s*Default \S+$", "", doc))
            for key, value, doc in describe_config(rec.config_cls(), user_keys=True)]
    width = min(max(len(left) for left, _ in rows), 48)
    print("\nconfig keys (override with --set KEY=VALUE; Python literals):")
    for left, doc in rows:
        print(f"  {left.ljust(width)}  # {doc}" if doc else f"  {left}")
    return 0


@_command("run")
def _run(args: argparse.Namespace) -> int:
    from .recipes import column_legend, format_summary, format_table, is_main_process, run_recipe

    if args.seeds is not None:
        return _run_seeds(args)
    result = run_recipe(args.recipe, args.out, args.set, resume=args.resume, full=args.full)
    if not is_main_process():  # under torchrun: one table, from rank 0
        return 0
    print(format_table(result))
    legend = column_legend(args.recipe, result)
    if legend:
        print(legend)
    if result.summary:
        print(format_summary(result.summary))  # 4 significant digits; results.json keeps every digit
    print(_written(Path(args.out)))
    return 0


def _run_seeds(args: argparse.Namespace) -> int:
    """``divmin run NAME --seeds S...``: one run per seed, then the table as mean ± sd over them."""
    from .recipes import column_legend, format_seeds_table, format_summary, is_main_process, run_recipe_seeds

    result = run_recipe_seeds(args.recipe, args.out, args.seeds, args.set, resume=args.resume, full=args.full)
    if not is_main_process():
        return 0
    print(f"{args.recipe} over seeds {', '.join(map(str, args.seeds))}: mean ± sd (sample sd, n - 1)")
    print(format_seeds_table(result))
    legend = column_legend(args.recipe, result)
    if legend:
        print(legend)
    summary = {k: _seeds_entry(v) for k, v in result.summary.items() if k not in ("spread", "cpu_seconds", "seeds")}
    if summary:
        print(format_summary(summary))
    cpu = result.summary["cpu_seconds"]
    per_seed = ", ".join("?" if c is None else f"{c:.0f}" for c in cpu["per_seed"])
    print(f"CPU seconds: {cpu['total']:.0f} in all ({per_seed} per seed)")
    print(_written(Path(args.out)))
    return 0


def _seeds_entry(value):
    """A summary entry over seeds as printed: ``mean ± sd``, or the per-seed values when short."""
    if isinstance(value, dict) and "sd" in value:
        return f"{value['mean']:.4g} ± {value['sd']:.2g}"
    if isinstance(value, dict) and "per_seed" in value and len(str(value["per_seed"])) > 160:
        return "differs between seeds (each seed's in results.json)"
    if isinstance(value, dict) and "per_seed" not in value:
        return {k: _seeds_entry(v) for k, v in value.items()}
    return value


def _written(out: Path) -> str:
    """The files a recipe wrote: those at the top of ``out``, then its training runs' directories."""
    files = sorted(p.name for p in out.iterdir() if p.is_file() and not p.name.startswith("."))
    text = f"wrote {out}/: {', '.join(files)}"
    runs = sorted(p.parent.relative_to(out).as_posix() for p in out.rglob("metrics.jsonl"))
    runs = [r for r in runs if r != "."]
    if runs:
        text += f"\ntraining runs under {out}/ (each with metrics.jsonl, checkpoints/): {', '.join(runs)}"
    return text


@_command("distill")
def _distill(args: argparse.Namespace) -> int:
    from .distill import cache_command

    return cache_command(args)


@_command("train")
def _train(args: argparse.Namespace) -> int:
    """``divmin train METHOD``: the method found once (``get_method``), its config, then one run."""
    from .engine import available_methods, get_method
    from .train import config_from, prepare, print_config, run_prepared

    if args.method == "list":
        names = available_methods()
        width = max(map(len, names))
        for name in names:
            print(f"{name.ljust(width)}  {get_method(name).summary}")
        return 0
    try:
        m = get_method(args.method)
        if args.print_config:
            print(print_config(m), end="")
            return 0
        if not args.out:
            raise ValueError("--out is required (the run directory)")
        config = config_from(m, args.config, args.set, resume_dir=args.out if args.resume else None)
        prepared = prepare(m, config, args.out, resume=args.resume)  # every user mistake fails here
    except _TRAIN_ERRORS as err:
        return _error(err)
    run = run_prepared(prepared, resume=args.resume)
    if run.files:
        out = Path(args.out)
        written = [out / n for n in ("train_config.yaml", "metrics.jsonl") if (out / n).is_file()]
        print("wrote " + ", ".join(map(str, written + sorted((out / "checkpoints").glob("step_*"))[-1:])))
        print(f"exported {out / 'final'}: " + ", ".join(p.name for p in run.files))
    return 0


@_command("export")
def _export(args: argparse.Namespace) -> int:
    from .engine import latest_checkpoint
    from .train import export_run, read_run_config

    try:
        read_run_config(args.run_dir)  # not a run directory: say that first
        ckpt = latest_checkpoint(args.run_dir)  # verified once, here: export_run is told which one
        if ckpt is None:
            raise ValueError(f"{args.run_dir}: no checkpoint to export (checkpoints/step_*)")
        files = export_run(args.run_dir, checkpoint=ckpt)
    except _TRAIN_ERRORS as err:
        return _error(err)
    print(f"exported {Path(args.run_dir) / 'final'} from {ckpt}: " + ", ".join(p.name for p in files))
    return 0


def _error(err: BaseException) -> int:
    print(f"divmin: error: {err}", file=sys.stderr)
    return 2


# what a user can get wrong before `divmin train` trains (a model that does not load is a ValueError,
# divmin.lm.ModelLoadError): one line on stderr, exit 2
_TRAIN_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError, NotADirectoryError)


def _add_train_parsers(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train a method on your models and data (`divmin train list`)")
    train.add_argument("method", help="method name (kd, fdpo, ...: `divmin train list`)")
    train.add_argument("--config", metavar="FILE.yaml", help="YAML config (see --print-config)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value (Python literal; dotted keys reach nested sections: "
                            "kd.engine.max_steps=10); applied after --config")
    train.add_argument("--out", help="run directory (checkpoints, metrics, final/ export)")
    train.add_argument("--print-config", action="store_true", help="print a commented example config and exit")
    train.add_argument("--resume", action="store_true", help="resume from the latest checkpoint in --out")
    export = sub.add_parser("export", help="export a `divmin train` run to RUN_DIR/final")
    export.add_argument("run_dir", help="a `divmin train` run directory")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="divmin", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("divergences", help="list the divergence registry")
    recipes = sub.add_parser("recipes", help="list the recipes, or show one recipe's config keys")
    recipes.add_argument("name", nargs="?", default=None,
                         help="a recipe: print its config keys with their defaults and meaning")
    run = sub.add_parser("run", help="run a recipe")
    run.add_argument("recipe", help="recipe name (see `divmin recipes`)")
    run.add_argument("--out", required=True, help="output directory")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value (Python literal; dotted keys reach nested configs)")
    run.add_argument("--full", action="store_true",
                     help="apply the recipe's full-size preset (see `divmin recipes`); --set values still win")
    run.add_argument("--resume", action="store_true", help="resume from the latest checkpoint in --out")
    run.add_argument("--seeds", type=int, nargs="+", default=None, metavar="SEED",
                     help="run once per seed (recipes with a `seed` key) into OUT/seed-S and report mean ± sd")
    from .distill import add_cache_parser

    add_cache_parser(sub)  # divmin distill cache ...
    _add_train_parsers(sub)  # divmin train ..., divmin export RUN_DIR
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; user mistakes get one line on stderr and exit 2, never a traceback."""
    from .engine import NoIntactCheckpointError, NonFiniteError, RunLockedError

    args = build_parser().parse_args(argv)
    try:
        return COMMANDS.get(args.command)(args)
    except KeyboardInterrupt:
        print(f"divmin: interrupted{_resume_hint(args)}", file=sys.stderr)
        return 130
    except NonFiniteError as err:  # the run diverged: say where, and where to restart from
        print(f"divmin: training stopped: {err}", file=sys.stderr)
        return 1
    except (RunLockedError, NotADirectoryError, FileExistsError, NoIntactCheckpointError) as err:  # the --out directory
        print(f"divmin: error: {_cli_words(err, args)}", file=sys.stderr)
        return 2
    except OSError as err:  # a read-only --out, a full disk, a link refused (engine.UnsafePathError): the file, not a trace
        print(f"divmin: error: {_os_error(err)}", file=sys.stderr)
        return 2
    except (ValueError, TypeError) as err:  # bad names, keys and values: one clear line, no traceback
        if args.command not in ("run", "recipes") or not _is_config_error(err):
            raise
        print(f"divmin: error: {err}", file=sys.stderr)
        return 2
    finally:
        _close_process_group()


def _os_error(err: OSError) -> str:
    if err.filename is not None and err.strerror:
        return f"{err.strerror}: {err.filename}"
    return str(err)


def _cli_words(err: Exception, args: argparse.Namespace) -> str:
    """The engine's refusal of a directory with checkpoints names its Python API (``fit(resume=True)``);
    on the command line, name the command that continues the run instead."""
    if isinstance(err, FileExistsError) and args.command == "run" and "already holds checkpoints" in str(err):
        seeds = f" --seeds {' '.join(map(str, args.seeds))}" if getattr(args, "seeds", None) else ""
        return (f"{args.out} already holds checkpoints of an earlier run: continue it with "
                f"`divmin run {args.recipe} --out {args.out}{seeds} --resume`, or choose another --out")
    return str(err)


def _resume_hint(args: argparse.Namespace) -> str:
    if args.command == "train" and getattr(args, "out", None):
        return f"; continue with: divmin train {args.method} --out {args.out} --resume"
    if args.command != "run":
        return ""
    if getattr(args, "seeds", None):  # finished seeds are read back, whether or not the recipe resumes
        seeds = " ".join(map(str, args.seeds))
        return f"; continue with: divmin run {args.recipe} --out {args.out} --seeds {seeds} --resume"
    from .recipes import get_recipe

    try:
        resumes = hasattr(get_recipe(args.recipe).config_cls(), "resume")
    except ValueError:
        return ""
    if not resumes:
        return f"; recipe {args.recipe!r} restarts from the beginning when run again"
    return f"; continue with: divmin run {args.recipe} --out {args.out} --resume"


def _close_process_group() -> None:
    """Under torchrun, tear the process group down before exit (left to interpreter shutdown,
    gloo's threads can abort the process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _is_config_error(err: Exception) -> bool:
    text = str(err)
    if text.startswith("`"):  # the project's form of a user error: it names the argument (`divergence`: ...)
        return True
    return any(s in text for s in ("unknown recipe", "unknown config key", "--set", "--seeds", "config key",
                                   "unknown divergence", "must", "does not resume"))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
