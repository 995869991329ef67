"""One recipe over several seeds: every figure as mean ± sd, with the CPU seconds it took.

``divmin run NAME --out DIR --seeds 0 1 2`` runs a recipe that has a single ``seed`` key once
per seed, each a complete run in ``DIR/seed-<s>/`` (its own config, results and figures), and
then writes ``DIR/results.json`` with the table over seeds:

- rows are matched across seeds by position when every seed's table has the same labels (its
  text cells: ``divergence``, ``model``, ...), else by label and order within the table;
- each numeric cell becomes ``mean``, ``sd`` (sample standard deviation, n - 1; 0 for one
  seed) and the per-seed values, in the seeds' order (a column equal on every seed stays as is;
  a NaN on any seed makes the cell NaN);
- the summary's numbers likewise (also inside dicts with the same keys on every seed); an
  entry equal on every seed is kept as it is, any other listed per seed;
- ``cpu_seconds``: the process CPU time of each seed's run (all threads), and their sum.

A recipe that already runs several seeds itself (a ``seeds`` key) is refused with the key to
set instead. The run records its ``--set`` overrides and preset in ``DIR/seeds.json``. With
``resume`` every seed runs with those (new seeds may be added); a seed whose ``results.json``
exists is read back, not rerun (with the CPU seconds it recorded; a result of another recipe is
refused); an interrupted seed resumes from its checkpoints when the recipe resumes (its CPU
seconds then count the resumed part only), and restarts otherwise.

>>> mean_sd([1.0, 2.0, 3.0])
(2.0, 1.0)
"""

from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path
from typing import Any, Sequence

from ..engine import RunDir, is_main_process
from ._registry import RecipeResult, format_table, get_recipe, run_recipe

__all__ = ["SeedsResult", "format_seeds_table", "run_recipe_seeds"]


class SeedsResult(RecipeResult):
    """A :class:`RecipeResult` whose numeric cells are the means over seeds; ``summary`` holds the
    spread (``sd``, per-seed values), ``seeds`` and ``cpu_seconds``."""


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample sd) of ``values``; sd 0 for one value. A NaN on any seed makes both NaN (no seed
    is dropped silently); an infinite value gives its mean and a NaN sd."""
    vals = [float(v) for v in values]
    if not vals or any(math.isnan(v) for v in vals):
        return math.nan, math.nan
    if not all(math.isfinite(v) for v in vals):
        return statistics.fmean(vals), math.nan
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0


def _label(row: dict[str, Any], columns: Sequence[str]) -> tuple:
    """The row's label: its text and boolean cells (not numbers, not a missing value)."""
    return tuple((c, row[c]) for c in columns if c != "seed" and isinstance(row.get(c), (str, bool)))


def _matched_rows(results: Sequence[RecipeResult]) -> list[list[dict]]:
    """The rows of every seed grouped as one row of the table: by position when every seed's table has
    the same rows with the same labels (non-numeric cells), else by label and, among rows sharing a
    label (rows told apart by a number, e.g. ``beta``), by their order within the seed's table."""
    columns = results[0].columns
    labels = [[_label(r, columns) for r in res.rows] for res in results]
    if all(lab == labels[0] for lab in labels):
        return [list(rows) for rows in zip(*(res.rows for res in results))]
    groups: dict[tuple, list[dict]] = {}
    for res in results:
        seen: dict[tuple, int] = {}
        for row in res.rows:
            label = _label(row, columns)
            seen[label] = seen.get(label, -1) + 1
            groups.setdefault((label, seen[label]), []).append(row)
    return list(groups.values())


def _aggregate_rows(results: Sequence[RecipeResult]) -> tuple[list[dict], list[dict]]:
    """(mean rows, spread rows) over seeds; a spread row maps each numeric column that varies over
    seeds to ``{"sd": ..., "values": [...]}`` (a column equal on every seed, e.g. ``beta``, is kept as is;
    one that is a number on some seeds only is NaN, its values listed)."""
    columns = results[0].columns
    means, spreads = [], []
    for rows in _matched_rows(results):
        mean, spread = dict(_label(rows[0], columns)), {}
        for c in columns:
            cells = [r.get(c) for r in rows]
            values = [v for v in cells if _is_number(v)]
            if c == "seed" or not values:
                continue
            if len(values) < len(cells):  # a number on some seeds only: no mean that drops a seed
                mean[c], spread[c] = math.nan, {"sd": math.nan, "values": cells}
                continue
            if all(v == values[0] for v in values):
                mean[c] = values[0]
                continue
            mean[c], sd = mean_sd(values)
            spread[c] = {"sd": sd, "values": values}
        means.append(mean)
        spreads.append(spread)
    return means, spreads


def _aggregate_summary(summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in dict.fromkeys(k for s in summaries for k in s):
        values = [s.get(key) for s in summaries]
        if all(isinstance(v, dict) and v and v.keys() == values[0].keys() for v in values):
            out[key] = _aggregate_summary(values)  # e.g. one figure per model: each aggregated
            continue
        if all(_is_number(v) for v in values) and any(v != values[0] for v in values):
            mean, sd = mean_sd(values)
            out[key] = {"mean": mean, "sd": sd, "values": values}
        else:
            same = all(json.dumps(v, sort_keys=True, default=str) == json.dumps(values[0], sort_keys=True,
                                                                             default=str) for v in values)
            out[key] = values[0] if same else {"per_seed": values}
    return out


def _check_seeds(name: str, seeds: Sequence[int]) -> None:
    rec = get_recipe(name)
    fields = rec.config_cls.__dataclass_fields__
    if "seeds" in fields:
        raise ValueError(f"`seeds`: recipe {name!r} runs several seeds itself: use --set \"seeds=(0, 1, 2)\", "
                         "not --seeds")
    if "seed" not in fields:
        raise ValueError(f"recipe {name!r} has no `seed` key to vary; --seeds applies to recipes that have one")
    if (not isinstance(seeds, (list, tuple)) or not seeds
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds)):
        raise ValueError(f"`seeds` must be a list of one or more ints >= 0, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"`seeds` must not repeat a seed, got {list(seeds)!r}")


def _read_back(name: str, out: Path) -> tuple[RecipeResult, float | None] | None:
    """A finished seed's result and CPU seconds (None when unknown); None when the seed has not finished."""
    done = out / "results.json"
    if not done.is_file():
        return None
    saved = json.loads(done.read_text(encoding="utf-8"))
    if saved.get("recipe") != name:
        raise ValueError(f"`--resume`: {done} is a result of recipe {saved.get('recipe')!r}, not {name!r}")
    cpu = saved.get("cpu_seconds")
    return RecipeResult(saved["columns"], saved["rows"], saved["plots"], saved["summary"]), cpu


def _one_seed(name: str, out: Path, seed: int, overrides: Sequence[str], *, resume: bool,
              full: bool) -> tuple[RecipeResult, float | None]:
    """The result of seed ``seed`` in ``out`` and its CPU seconds (read back when resuming a finished seed)."""
    if resume and (found := _read_back(name, out)) is not None:
        return found
    # resume a seed the interrupted run had started, when the recipe resumes at all
    resume = resume and "resume" in get_recipe(name).config_cls.__dataclass_fields__ and any(
        out.glob("**/checkpoints/step_*"))
    start = time.process_time()
    result = run_recipe(name, out, (*overrides, f"seed={seed}"), resume=resume, full=full)
    cpu = time.process_time() - start
    if is_main_process():  # the seed's own results.json also records what it cost
        saved = json.loads((out / "results.json").read_text(encoding="utf-8"))
        RunDir(out, kind="recipe", name=name, config_file="config.json").write_json(
            "results.json", {**saved, "cpu_seconds": cpu})
    return result, cpu


def _settings(top: RunDir, name: str, overrides: Sequence[str], full: bool, resume: bool) -> tuple[list[str], bool]:
    """The overrides and preset every seed runs with: those given, or on ``resume`` those the run recorded in
    ``seeds.json`` (given ones must equal them: one table never mixes two configs)."""
    record = top.out / "seeds.json"
    if not (resume and record.is_file()):
        return list(overrides), full
    saved = json.loads(record.read_text(encoding="utf-8"))
    if saved.get("recipe") != name:
        raise ValueError(f"`--resume`: {top.out} holds a --seeds run of recipe {saved.get('recipe')!r}, not {name!r}")
    if (overrides and list(overrides) != saved["overrides"]) or (full and not saved["full"]):
        raise ValueError(f"`--resume`: the seeds of {top.out} ran with --set {saved['overrides']} and "
                         f"full={saved['full']}; resume without --set/--full (they are reused) or use another --out")
    return list(saved["overrides"]), bool(saved["full"])


def run_recipe_seeds(name: str, out_dir: str | Path, seeds: Sequence[int], overrides: Sequence[str] = (), *,
                     resume: bool = False, full: bool = False) -> SeedsResult:
    """Run recipe ``name`` once per seed into ``out_dir/seed-<s>`` and return the table over seeds
    (see the module docstring); ``overrides``, ``resume`` and ``full`` as :func:`run_recipe`'s. The run
    records its overrides and preset in ``out_dir/seeds.json``; ``resume`` reuses them (and may add seeds)."""
    _check_seeds(name, seeds)
    if not isinstance(overrides, (list, tuple)) or not all(isinstance(o, str) for o in overrides):
        raise TypeError(f"`overrides` must be a list of 'key=value' strings, got {overrides!r}")
    if any(o.split("=", 1)[0].strip() == "seed" for o in overrides):
        raise ValueError("`overrides`: --set seed=... and --seeds together; --seeds sets each run's seed")
    top = RunDir(out_dir, kind="recipe", name=name, config_file="config.json")
    with top.open() as main:
        overrides, full = _settings(top, name, overrides, full, resume)
        if main:
            top.write_json("seeds.json", {"recipe": name, "seeds": list(seeds), "overrides": overrides, "full": full})
        results, cpu = [], []
        for s in seeds:
            result, seconds = _one_seed(name, top.out / f"seed-{s}", s, overrides, resume=resume, full=full)
            results.append(result)
            cpu.append(seconds)
        means, spreads = _aggregate_rows(results)
        known = [c for c in cpu if c is not None]
        summary = {**_aggregate_summary([r.summary for r in results]), "seeds": list(seeds),
                   "cpu_seconds": {"per_seed": cpu, "total": math.fsum(known), "unknown": len(cpu) - len(known)}}
        plots = [p for r in results for p in r.plots]
        if main:
            top.write_json("results.json", {"recipe": name, "seeds": list(seeds), "columns": results[0].columns,
                                            "rows": means, "spread": spreads, "plots": plots, "summary": summary})
    return SeedsResult(results[0].columns, means, plots, {**summary, "spread": spreads})


def seed_sd(values: Sequence[float]) -> float:
    """Sample sd of a figure over seeds: 0 for one seed, NaN when a seed's value is NaN or infinite
    (``statistics.stdev`` cannot take those)."""
    return mean_sd(values)[1]


def format_seeds_table(result: SeedsResult) -> str:
    """The table with each numeric cell as ``mean ± sd`` (4 and 2 significant digits)."""
    rows = []
    for row, spread in zip(result.rows, result.summary["spread"]):
        rows.append({c: f"{v:.4g} ± {spread[c]['sd']:.2g}" if c in spread else v for c, v in row.items()})
    return format_table(RecipeResult(result.columns, rows, result.plots))
