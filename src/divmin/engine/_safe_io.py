"""Writes under a run directory that never follow a symbolic link.

Everything divmin writes under ``--out`` (the run lock, ``config.json``,
``metrics.jsonl``, checkpoints, figures, exports, teacher-cache shards) goes
through these helpers. A link planted in the output directory (``ln -s
~/precious out/results.json``) would otherwise make a run overwrite whatever
it points at; here the final name is opened with ``O_NOFOLLOW`` or replaced
atomically, and a name that is a link is refused with `UnsafePathError`. The
output directory itself may be a link (the user chose it); links *inside* it,
file or directory, are refused.

Whole files are written to a fresh temporary name in the same directory
(``O_CREAT | O_EXCL``: never an existing file or link) and renamed over the
target, so a reader never sees half a file and a kill leaves the old one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ["UnsafePathError", "atomic_path", "atomic_write", "check_not_link", "open_nofollow", "safe_dir"]


class UnsafePathError(OSError):
    """A path divmin was about to write is a symbolic link (it would write where the link points)."""


def _refuse(path: Path) -> UnsafePathError:
    return UnsafePathError(f"refusing to write {path}: it is a symbolic link (divmin never writes through links "
                           "inside an output directory); remove the link or choose another output directory")


def check_not_link(path: str | os.PathLike, *, under: str | os.PathLike | None = None) -> Path:
    """``path``, after checking that neither it nor any directory between ``under`` (excluded) and it is a link."""
    path = Path(path)
    if path.is_symlink():
        raise _refuse(path)
    if under is not None:
        root = Path(under)
        try:
            parts = path.relative_to(root).parts
        except ValueError:
            parts = ()
        current = root
        for part in parts[:-1]:
            current = current / part
            if current.is_symlink():
                raise _refuse(current)
    return path


def safe_dir(path: str | os.PathLike, *, under: str | os.PathLike | None = None) -> Path:
    """Create directory ``path`` (and its parents) unless it exists; refuse it, or a directory between
    ``under`` and it, when it is a link; ``NotADirectoryError`` when it is a file."""
    path = check_not_link(path, under=under)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} is a file; a directory is needed there")
    path.mkdir(parents=True, exist_ok=True)
    return path


_MODES = {  # open() mode -> os.open flags (always with O_NOFOLLOW: a link as last component fails with ELOOP)
    "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
    "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
    "r+": os.O_RDWR | os.O_CREAT,  # read and write, created if missing, not truncated (the run lock)
}


def open_nofollow(path: str | os.PathLike, mode: str = "w") -> IO[str]:
    """``open(path, mode)`` for text ``mode`` in "w", "a", "r+" (created if missing), refusing a link."""
    path = Path(path)
    flags = _MODES[mode] | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as err:
        if err.errno == errno.ELOOP or path.is_symlink():
            raise _refuse(path) from None
        raise
    return os.fdopen(fd, mode, encoding="utf-8")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A fresh temporary path beside ``path``; when the block succeeds it is renamed over ``path``.

    For writers that take a file name (``savefig``, ``safetensors.save_file``): the rename replaces
    the name itself, never a file a link points to; a link already at ``path`` is refused first.
    """
    path = check_not_link(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp's 0600 would make the results unreadable to the user's group
    try:
        yield Path(tmp)
        check_not_link(path)  # not planted while the block ran
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically, refusing a link at ``path``."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:  # mkstemp made it: a fresh regular file, not a link
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)
