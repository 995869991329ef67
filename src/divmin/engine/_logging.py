"""Where logged records go: console, ``metrics.jsonl``, TensorBoard, a tqdm bar.

Only the main process writes; the others keep a disabled bar so the calling
code is the same everywhere. Records arrive already averaged over processes.
The bar is drawn only on a terminal: written to a file or a pipe, its carriage-return
redraws pile up into one line of hundreds of characters, so there the console gets one
short line per logged step instead.
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ._config import EngineConfig
from ._safe_io import atomic_write, check_not_link, open_nofollow, safe_dir


class RunLogger:
    """Sink for one record (a flat dict of floats with a "step") per logged step."""

    def __init__(self, config: EngineConfig, is_main: bool, start_step: int, resumed: bool) -> None:
        self._main = is_main
        self._max_steps = config.max_steps
        self._label = config.label
        self._jsonl = None
        self._tb = None
        run_dir = config.run_dir
        if is_main and run_dir is not None:
            run_dir.mkdir(parents=True, exist_ok=True)  # the run directory itself may be a link: the user named it
            path = run_dir / "metrics.jsonl"
            if resumed:
                # Drop records the interrupted run wrote after its checkpoint:
                # they are about to be logged again.
                _truncate_jsonl(path, start_step)
            self._jsonl = open_nofollow(path, "a" if resumed else "w")  # closed in close()
            if config.tensorboard:
                self._tb = _summary_writer(safe_dir(run_dir / "tensorboard"), start_step + 1 if resumed else None)
        self._bar = tqdm(
            total=config.max_steps,
            initial=start_step,
            desc=config.label or "train",
            dynamic_ncols=True,
            disable=not (config.progress and is_main and _terminal()),
        )

    def advance(self) -> None:
        """One engine step done."""
        self._bar.update(1)

    def log(self, record: dict[str, Any]) -> None:
        if not self._main:
            return
        step = int(record["step"])
        if self._jsonl is not None:
            self._jsonl.write(json.dumps(record) + "\n")
            self._jsonl.flush()  # so a crash keeps what was logged
        if self._tb is not None:
            for key, value in record.items():
                if key != "step":
                    self._tb.add_scalar(key, value, step)
        if "loss" in record:
            self._bar.set_postfix(loss=f"{record['loss']:.4g}", refresh=False)
        self._console(record)

    def _console(self, record: dict[str, Any]) -> None:
        parts = [f"step {record['step']}/{self._max_steps}"]
        if self._label:  # several runs print into one console (a recipe's students): say whose line it is
            parts.insert(0, self._label)
        parts += [f"{k}={_fmt(v)}" for k, v in record.items() if k != "step"]
        line = " | ".join(parts)
        if self._bar.disable:
            print(line, flush=True)
        else:
            self._bar.write(line)

    def close(self) -> None:
        self._bar.close()
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)  # where tqdm draws
    return bool(isatty and isatty())


def _fmt(value: float) -> str:
    if isinstance(value, float) and math.isfinite(value) and value != 0 and not 1e-3 <= abs(value) < 1e4:
        return f"{value:.3e}"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _truncate_jsonl(path: Path, last_step: int) -> None:
    """Keep the records up to ``last_step``; drop, with a warning, lines a kill left half-written."""
    if not check_not_link(path).is_file():  # not even read through a link: it is about to be rewritten
        return
    kept, broken = [], 0
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line) if line.strip() else None
        except ValueError:
            broken += 1
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= last_step:
            kept.append(line)
    if broken:
        warnings.warn(f"{path}: dropped {broken} unreadable line(s) (a write interrupted by a kill)",
                      RuntimeWarning, stacklevel=3)
    atomic_write(path, "".join(line + "\n" for line in kept))


def _summary_writer(log_dir: Path, purge_step: int | None) -> Any:
    # Imported lazily: tensorboard is slow to import and unused without out_dir.
    from torch.utils.tensorboard import SummaryWriter

    # purge_step makes TensorBoard hide events >= purge_step from the
    # interrupted run, so resumed curves do not show the replayed steps twice.
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)
