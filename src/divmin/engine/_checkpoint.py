"""Checkpoints that load without unpickling anything.

Layout of ``out_dir/checkpoints/step_XXXXXXX/`` (7-digit zero-padded step)::

    engine.json                       step, data position, optimizer step counts,
                                      grad-scaler state, world size, config
    models/<name>.safetensors         weights (safetensors.torch.save_model)
    optimizers/<name>.{json,safetensors}   optimizer.state_dict() as a tree
    task/rank_<r>.{json,safetensors}       task.state_dict(), one per process
    rng/rank_<r>.{json,safetensors}        python, numpy, torch CPU (+ CUDA) RNG
                                           states, one per process

``.json`` files are read with ``json.load``, ``.safetensors`` with
``safetensors`` (see `_serialize`). A checkpoint is written to a hidden
``.tmp_step_XXXXXXX`` directory and renamed when complete, so a crash while
saving never leaves a half checkpoint that looks like the latest.
``engine.json``, written last, lists every other file with its size and
SHA-256 (``files``), and holds the SHA-256 of its own content (``sha256``, over
the canonical JSON of every other key: a flipped step or a damaged file list is
caught as a damaged weight file is): a resume verifies them and falls back, with
a warning naming the damaged one, to the newest intact checkpoint
(`latest_checkpoint`). Nothing is written through a link (`_safe_io`).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from safetensors.torch import load_model, save_model
from torch import nn

from ._safe_io import atomic_path, atomic_write, check_not_link, safe_dir
from ._serialize import load_tree, save_tree

FORMAT_VERSION = 3  # 2: engine.json lists every file's size and SHA-256; 3: and its own ("sha256")
_READABLE_VERSIONS = (1, 2, 3)
_SELF = "sha256"  # engine.json's key holding the SHA-256 of its other keys


class NoIntactCheckpointError(ValueError):
    """Checkpoints exist but every one is damaged: a resume cannot continue the run."""
_STEP_DIR = re.compile(r"^step_(\d+)$")


def step_dir_name(step: int) -> str:
    return f"step_{step:07d}"


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``root`` as (step, path), oldest first."""
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _STEP_DIR.match(path.name)
        if match and (path / "engine.json").is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(out_dir: str | Path, *, verify: bool = True) -> Path | None:
    """Most recent intact checkpoint of the run in ``out_dir`` (None if there is none).

    With ``verify`` (default) each candidate, newest first, is checked against the
    sizes and SHA-256 sums its ``engine.json`` records (`verify_checkpoint`); a
    damaged one (a kill during a copy, a truncated file) is skipped with a warning
    that names it. Raises ``ValueError`` when checkpoints exist but none is intact.
    """
    found = list_checkpoints(Path(out_dir) / "checkpoints")
    if not verify:
        return found[-1][1] if found else None
    damaged = []
    for _, path in reversed(found):
        problem = verify_checkpoint(path)
        if problem is None:
            if damaged:
                warnings.warn(f"damaged checkpoint(s) skipped: {'; '.join(damaged)}; resuming from {path}",
                              RuntimeWarning, stacklevel=2)
            return path
        damaged.append(f"{path}: {problem}")
    if damaged:
        raise NoIntactCheckpointError(f"no intact checkpoint in {Path(out_dir) / 'checkpoints'}: {'; '.join(damaged)}")
    return None


def verify_checkpoint(path: Path) -> str | None:
    """What is wrong with checkpoint ``path`` (a short text), or None when every recorded file matches."""
    try:
        with open(path / "engine.json") as fh:
            state = json.load(fh)
    except (OSError, ValueError) as err:
        return f"engine.json unreadable ({type(err).__name__}: {err})"
    if not isinstance(state, dict) or state.get("format_version") not in _READABLE_VERSIONS:
        return f"engine.json has an unknown format {state.get('format_version') if isinstance(state, dict) else state!r}"
    problem = _self_check(state)
    if problem is not None:
        return problem
    for rel, (size, digest) in state.get("files", {}).items():
        file = path / rel
        if not file.is_file():
            return f"{rel} is missing"
        if file.stat().st_size != size:
            return f"{rel} has {file.stat().st_size} bytes, {size} were written"
        if _sha256(file) != digest:
            return f"{rel} does not match its SHA-256"
    return None


def _content_sha256(state: Mapping[str, Any]) -> str:
    """SHA-256 of engine.json's content less its own checksum, as canonical JSON (sorted keys, no spaces)."""
    body = {k: v for k, v in state.items() if k != _SELF}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _self_check(state: Mapping[str, Any]) -> str | None:
    # a checksum that is there is always checked, so a flip of the version digit (3 -> 2) cannot skip it;
    # only the formats written before it (1, 2) may lack one
    if _SELF not in state:
        return None if state.get("format_version") in (1, 2) else "engine.json has no checksum of its own"
    if state[_SELF] != _content_sha256(state):
        return "engine.json does not match its own SHA-256 (its step, data position or file list was altered)"
    return None


def _sha256(file: Path) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _manifest(folder: Path) -> dict[str, list]:
    """{relative path: [bytes, sha256]} of every file under ``folder``."""
    return {f.relative_to(folder).as_posix(): [f.stat().st_size, _sha256(f)]
            for f in sorted(folder.rglob("*")) if f.is_file()}


# ----------------------------------------------------------------- RNG state
def capture_rng_state() -> dict[str, Any]:
    """Global RNG states of this process (python, numpy, torch CPU, CUDA if initialised)."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------- save
def save_checkpoint(
    root: Path,
    step: int,
    accelerator: Accelerator,
    *,
    models: Mapping[str, nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
    engine_state: dict[str, Any],
    task_state: Any | None,
    keep: int | None,
) -> Path:
    """Write checkpoint ``step`` (collective: every process must call it).

    ``models`` are the unwrapped modules to save; replicated state (models,
    optimizers, engine) is written by the main process, per-process state
    (RNG, task) by every process.
    """
    final, tmp = root / step_dir_name(step), root / f".tmp_{step_dir_name(step)}"
    rank = accelerator.process_index
    if accelerator.is_main_process:
        safe_dir(root)  # out_dir/checkpoints: a link there would put the run's checkpoints elsewhere
        for path in (tmp, final):
            check_not_link(path)  # rmtree would not follow a link, but the mkdir / rename below would
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "models").mkdir(parents=True)
        (tmp / "optimizers").mkdir()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _save_replicated(tmp, models, optimizers)
    save_tree(capture_rng_state(), tmp / "rng" / f"rank_{rank}")
    if task_state is not None:
        save_tree(task_state, tmp / "task" / f"rank_{rank}")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _save_engine_state(tmp, accelerator, engine_state)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        _prune(root, keep)
    accelerator.wait_for_everyone()
    return final


def _save_replicated(
    tmp: Path, models: Mapping[str, nn.Module], optimizers: Mapping[str, torch.optim.Optimizer]
) -> None:
    for name, model in models.items():
        # save_model (not save_file) handles tied weights.
        with atomic_path(tmp / "models" / f"{name}.safetensors") as file:
            save_model(model, str(file))
    for name, opt in optimizers.items():
        save_tree(opt.state_dict(), tmp / "optimizers" / name)


def _save_engine_state(tmp: Path, accelerator: Accelerator, engine_state: dict[str, Any]) -> None:
    """engine.json, last (its presence marks the directory complete), with the manifest of every other file."""
    scaler = getattr(accelerator, "scaler", None)
    state = {
        "format_version": FORMAT_VERSION,
        **engine_state,
        "num_processes": accelerator.num_processes,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "files": _manifest(tmp),
    }
    state[_SELF] = _content_sha256(state)
    atomic_write(tmp / "engine.json", json.dumps(state, indent=1))


def _prune(root: Path, keep: int | None) -> None:
    if keep is None:
        return
    for _, path in list_checkpoints(root)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------- load
def load_checkpoint(
    path: Path,
    accelerator: Accelerator,
    *,
    models: Mapping[str, nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
) -> tuple[dict[str, Any], Any | None]:
    """Load weights and optimizer states in place; return (engine_state, task_state).

    RNG states are *not* restored here (see `load_rng`): the caller restores
    them last, after anything that might still draw random numbers.
    """
    with open(path / "engine.json") as fh:
        engine_state = json.load(fh)
    if engine_state.get("format_version") not in _READABLE_VERSIONS:
        raise ValueError(f"{path}: unsupported checkpoint format {engine_state.get('format_version')!r}")
    problem = _self_check(engine_state)
    if problem is not None:  # read again since latest_checkpoint verified it: refuse a change in between
        raise NoIntactCheckpointError(f"{path}: {problem}")
    for name, model in models.items():
        # Read on CPU; load_state_dict copies into the params wherever they live
        # (safetensors rejects device strings such as "cpu:0" used by multi-CPU runs).
        load_model(model, str(path / "models" / f"{name}.safetensors"), device="cpu")
    for name, opt in optimizers.items():
        opt.load_state_dict(load_tree(path / "optimizers" / name))
    scaler = getattr(accelerator, "scaler", None)
    if scaler is not None and engine_state.get("scaler"):
        scaler.load_state_dict(engine_state["scaler"])
    task_stem = _rank_stem(path / "task", accelerator.process_index)
    task_state = load_tree(task_stem) if task_stem is not None else None
    return engine_state, task_state


def load_rng(path: Path, accelerator: Accelerator) -> None:
    """Restore this process's global RNG states from checkpoint ``path``."""
    stem = _rank_stem(path / "rng", accelerator.process_index)
    if stem is None:
        raise FileNotFoundError(f"{path}: no RNG state saved")
    restore_rng_state(load_tree(stem))


def _rank_stem(folder: Path, rank: int) -> Path | None:
    """``folder/rank_<rank>``, else rank 0's (resuming with more processes than saved)."""
    stem = folder / f"rank_{rank}"
    if stem.with_suffix(".json").is_file():
        return stem
    fallback = folder / "rank_0"
    if fallback.with_suffix(".json").is_file():
        warnings.warn(
            f"{folder}: no state for process {rank}; using process 0's (resume is not exact "
            "when the number of processes changes)",
            stacklevel=3,
        )
        return fallback
    return None


def default_checkpoint_every(max_steps: int, log_every: int = 1) -> int:
    """Checkpoint interval of a recipe run whose config leaves ``checkpoint_every`` unset: a quarter
    of the run, rounded down to a multiple of ``log_every`` (at least ``log_every``); the engine also
    checkpoints at the last step. An interruption loses at most a quarter of the run in progress.

    On a log step, so that every checkpoint sits where metrics.jsonl has a record (a checkpoint
    between two logs also resumes exactly: the engine saves the metric sums since the last log).
    """
    quarter = max(1, max_steps // 4)
    return max(log_every, quarter // log_every * log_every)
