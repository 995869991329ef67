"""Image data with no download: scikit-learn's digits, MNIST-format IDX files, Debian's Fashion-MNIST.

IDX (LeCun et al.'s MNIST format): a 4-byte magic ``0x00 0x00 <type> <ndim>``,
``ndim`` big-endian uint32 sizes, then the values in big-endian row-major order;
``<type>`` is 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64.
Files ending in ``.gz`` are decompressed on the fly.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["FASHION_MNIST_DIRS", "fashion_mnist", "find_fashion_mnist", "load_digits_images", "read_idx"]

_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

# where Debian's `dataset-fashion-mnist` package may put its files (apt install dataset-fashion-mnist)
FASHION_MNIST_DIRS = ("/usr/share/dataset-fashion-mnist", "/usr/share/fashion-mnist",
                      "/usr/share/datasets/fashion-mnist")
_SPLITS = {"train": "train", "test": "t10k"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array stored in the IDX file ``path`` (``.gz`` allowed), in native byte order.

    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "a.idx"
    >>> _ = f.write_bytes(bytes([0, 0, 8, 2, 0, 0, 0, 1, 0, 0, 0, 2, 7, 9]))
    >>> read_idx(f).tolist()
    [[7, 9]]
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"`path` is not a file: {path}")
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"`path` is not an IDX file (bad magic {raw[:4]!r}): {path}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"`path` is truncated (no room for {ndim} sizes): {path}")
    shape = tuple(int(v) for v in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    count = int(np.prod(shape)) if shape else 1
    if len(raw) != header + count * dtype.itemsize:
        raise ValueError(f"`path` holds {len(raw) - header} data bytes, expected {count * dtype.itemsize} "
                         f"for shape {shape}: {path}")
    return np.frombuffer(raw, dtype, count=count, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def load_digits_images() -> tuple[Tensor, Tensor]:
    """scikit-learn's 8x8 digits (1797 images, shipped with the package): x (N, 1, 8, 8) in [0, 1], y (N,).

    >>> x, y = load_digits_images()
    >>> tuple(x.shape), int(y.max())
    ((1797, 1, 8, 8), 9)
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError('the digits data needs scikit-learn: pip install "divmin[data]"') from err
    d = load_digits()
    return torch.tensor(d.images / 16.0, dtype=torch.float32)[:, None], torch.tensor(d.target, dtype=torch.long)


def _find(root: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    return None


def find_fashion_mnist(root: str | os.PathLike | None = None) -> Path | None:
    """The directory holding Fashion-MNIST's four IDX files (``root``, else ``FASHION_MNIST_DIRS``), or None."""
    roots = [Path(root)] if root is not None else [Path(d) for d in FASHION_MNIST_DIRS]
    for r in roots:
        stems = [f"{p}-{kind}-idx{n}-ubyte" for p in _SPLITS.values() for kind, n in (("images", 3), ("labels", 1))]
        if all(_find(r, s) for s in stems):
            return r
    return None


def fashion_mnist(split: str = "train", *, root: str | os.PathLike | None = None) -> tuple[Tensor, Tensor]:
    """Fashion-MNIST (Xiao et al. 2017) from IDX files: x (N, 1, 28, 28) in [0, 1], y (N,).

    ``root``: a directory with ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``; default: where
    Debian's ``dataset-fashion-mnist`` package installs them (``apt install dataset-fashion-mnist``).
    """
    if split not in _SPLITS:
        raise ValueError(f"`split` must be one of {sorted(_SPLITS)}, got {split!r}")
    found = find_fashion_mnist(root)
    if found is None:
        where = root if root is not None else ", ".join(FASHION_MNIST_DIRS)
        raise FileNotFoundError(f"Fashion-MNIST IDX files not found in {where} "
                                "(apt install dataset-fashion-mnist, or pass `root`)")
    prefix = _SPLITS[split]
    images = read_idx(_find(found, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(found, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise ValueError(f"Fashion-MNIST files in {found} have shapes {images.shape} and {labels.shape}")
    x = torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]
    return x, torch.from_numpy(labels.astype(np.int64))
