"""One run per directory: an exclusive lock on a run's output directory.

Two runs writing into one directory would silently overwrite each other's
checkpoints and metrics, or crash when one deletes the other's temporary
files. `run_lock` takes an exclusive, non-blocking ``flock`` on
``<dir>/.divmin.lock`` (the file holds the owner's PID, for the error
message). The kernel releases a ``flock`` when its process ends, so a crash or
``kill -9`` never leaves a stale lock. Re-entrant within a process (a recipe
locks ``--out`` and its trainers lock sub-directories, or the same one).
Only the main process of a distributed run should take it. A link at the
lock's name is refused (`UnsafePathError`), never followed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from ._safe_io import open_nofollow

try:  # POSIX; elsewhere runs are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_NAME = ".divmin.lock"
_HELD: dict[Path, list] = {}  # resolved dir -> [open file, depth]: this process's locks


class RunLockedError(RuntimeError):
    """Another process is running into the same output directory."""


@contextlib.contextmanager
def run_lock(directory: str | Path) -> Iterator[Path]:
    """Hold the exclusive lock of run directory ``directory`` (created if needed) for the block.

    Raises `RunLockedError` naming the holder's PID when another process holds it.
    """
    folder = Path(directory)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"output directory {folder} is a file; choose a directory")
    folder.mkdir(parents=True, exist_ok=True)
    key = folder.resolve()
    if key in _HELD:
        _HELD[key][1] += 1
    else:
        _HELD[key] = [_acquire(folder), 1]
    try:
        yield folder
    finally:
        _HELD[key][1] -= 1
        if _HELD[key][1] == 0:
            fh = _HELD.pop(key)[0]
            if fh is not None:
                fh.close()  # closing the descriptor releases the flock


def _acquire(folder: Path):  # -> open file or None
    if fcntl is None:  # pragma: no cover
        return None
    path = folder / LOCK_NAME
    fh = open_nofollow(path, "r+")  # held until the run ends; never through a link planted at that name
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "unknown"
        fh.close()
        raise RunLockedError(f"{folder} is in use by another divmin run (PID {holder}); wait for it to end or "
                             "choose another output directory") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    return fh
