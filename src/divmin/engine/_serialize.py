"""Pickle-free serialisation of nested state: JSON skeleton + safetensors payload.

``save_tree(obj, stem)`` writes ``stem.json`` and ``stem.safetensors``;
``load_tree(stem)`` reads them back with ``json.load`` and
``safetensors.torch.load_file`` only, so loading a checkpoint can never run
code. Supported leaves: None, bool, int, float, str, torch tensors, numpy
arrays and numpy scalars; containers: dict (any hashable JSON-scalar keys),
list, tuple. Tuples and non-string keys are tagged so they come back exactly
(``random.setstate`` needs tuples, optimizer state uses int keys).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ._safe_io import atomic_path, atomic_write, safe_dir

_TENSOR, _NDARRAY, _TUPLE, _ITEMS = "__tensor__", "__ndarray__", "__tuple__", "__items__"
_TAGS = (_TENSOR, _NDARRAY, _TUPLE, _ITEMS)


def flatten(obj: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """Split ``obj`` into a JSON-ready skeleton and a flat dict of CPU tensors."""
    tensors: dict[str, torch.Tensor] = {}
    return _encode(obj, tensors, "$"), tensors


def unflatten(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of `flatten`."""
    return _decode(skeleton, tensors)


def save_tree(obj: Any, stem: Path) -> None:
    """Write ``obj`` to ``stem.json`` + ``stem.safetensors``."""
    skeleton, tensors = flatten(obj)
    safe_dir(stem.parent)
    with atomic_path(stem.with_suffix(".safetensors")) as tmp:
        save_file(tensors, str(tmp))
    atomic_write(stem.with_suffix(".json"), json.dumps(skeleton))


def load_tree(stem: Path) -> Any:
    """Read what `save_tree` wrote (no unpickling)."""
    with open(stem.with_suffix(".json")) as fh:
        skeleton = json.load(fh)
    return unflatten(skeleton, load_file(str(stem.with_suffix(".safetensors"))))


def _encode(obj: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        # clone: safetensors refuses tensors that share storage (views).
        tensors[key] = obj.detach().to("cpu", copy=True).contiguous()
        return {_TENSOR: key}
    if isinstance(obj, np.ndarray):
        key = f"t{len(tensors)}"
        arr = obj
        if arr.dtype.kind == "u":  # torch lacks most unsigned dtypes; int64 holds uint32.
            arr = arr.astype(np.int64)
        tensors[key] = torch.from_numpy(np.ascontiguousarray(arr).copy())
        return {_NDARRAY: key, "dtype": obj.dtype.str}
    if isinstance(obj, tuple):
        return {_TUPLE: [_encode(v, tensors, f"{path}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{path}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        return _encode_dict(obj, tensors, path)
    raise TypeError(f"cannot serialise {type(obj).__name__} at {path} without pickle")


def _encode_dict(obj: dict, tensors: dict[str, torch.Tensor], path: str) -> Any:
    plain = all(isinstance(k, str) and k not in _TAGS for k in obj)
    if plain:
        return {k: _encode(v, tensors, f"{path}.{k}") for k, v in obj.items()}
    items = []
    for k, v in obj.items():
        if not (k is None or isinstance(k, (bool, int, float, str))):
            raise TypeError(f"cannot serialise dict key {k!r} at {path}")
        items.append([k, _encode(v, tensors, f"{path}.{k}")])
    return {_ITEMS: items}


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if _TENSOR in obj:
        return tensors[obj[_TENSOR]]
    if _NDARRAY in obj:
        return tensors[obj[_NDARRAY]].numpy().astype(np.dtype(obj["dtype"]))
    if _TUPLE in obj:
        return tuple(_decode(v, tensors) for v in obj[_TUPLE])
    if _ITEMS in obj:
        return {k: _decode(v, tensors) for k, v in obj[_ITEMS]}
    return {k: _decode(v, tensors) for k, v in obj.items()}
