"""On-disk layout of a teacher cache: encodings of the top-k log-probabilities, id packing, shards, manifest.

A cache directory holds ``manifest.json`` and shards ``shard-00000.safetensors``, ...
Shard j covers dataset rows ``[j * rows_per_shard, (j + 1) * rows_per_shard)``; for its
n rows and N = sum of their completion lengths it stores

* ``offsets`` (n + 1,) int64: row i's tokens are ``[offsets[i], offsets[i + 1])``;
* ``ids`` (N, k, b) uint8: the top-k token ids, little-endian in b = ceil(log2(V) / 8)
  bytes (2 for V <= 65536, 3 for Llama-3's 128256);
* ``log_tail`` (N,) float32: log of the teacher mass off the top k (``-inf`` when k = V);
* the encoding's tensors of the log-probabilities (see ``ENCODINGS``).

Why safetensors and not Arrow: every field is a fixed-width tensor, safetensors is
already a dependency, a shard is memory-mapped and sliced (``safe_open(...).get_slice``)
without a copy or a schema, and one file per shard makes "written in full" one atomic
rename and lets each process of a data-parallel job write its own shards.

Each shard's SHA-256 is in the manifest; a shard that does not match is refused.
The log-probabilities that :func:`decode` returns are renormalised so that
``sum(exp(lp)) + exp(log_tail) = 1``: quantisation error then moves mass between the k ids
but never creates or loses it, so the bucketed loss stays a divergence between two
distributions.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from ..engine import atomic_path, atomic_write
from ..registry import Registry

__all__ = ["ENCODINGS", "MANIFEST", "FORMAT", "id_bytes", "pack_ids", "unpack_ids", "encode", "decode",
           "write_shard", "ShardReader", "log1mexp", "sha256_file", "shard_name", "bytes_per_token", "check_plan",
           "read_json", "shard_done", "write_json"]

MANIFEST = "manifest.json"
FORMAT = "divmin-teacher-cache/1"
_MISSING = 255  # int8 code of a -inf log-probability (fewer than k candidates)


def id_bytes(vocab_size: int) -> int:
    """Bytes per packed token id: the smallest b with 256^b >= vocab_size."""
    return max(1, math.ceil(math.log2(max(vocab_size, 2)) / 8))


def pack_ids(ids: Tensor, width: int) -> Tensor:
    """``(..., k)`` int64 ids -> ``(..., k, width)`` uint8, little-endian."""
    shifts = torch.arange(width, device=ids.device) * 8
    return ((ids.long().unsqueeze(-1) >> shifts) & 0xFF).to(torch.uint8)


def unpack_ids(packed: Tensor) -> Tensor:
    """Inverse of :func:`pack_ids`: ``(..., k, width)`` uint8 -> ``(..., k)`` int64."""
    shifts = torch.arange(packed.shape[-1], device=packed.device) * 8
    return (packed.long() << shifts).sum(-1)


# ----------------------------------------------------------------------------- encodings
def _float_codec(dtype: torch.dtype) -> tuple[Callable, Callable]:
    return (lambda lp: {"lp": lp.to(dtype)}), (lambda t: t["lp"].float())


def _int8_encode(lp: Tensor) -> dict[str, Tensor]:
    """Per row: ``hi`` = its largest log-prob, ``step`` = (hi - smallest finite) / 254, codes 0..254 (255 = -inf)."""
    finite = torch.isfinite(lp)
    hi = torch.where(finite, lp, -math.inf).amax(-1)
    hi = torch.where(torch.isfinite(hi), hi, torch.zeros_like(hi))
    lo = torch.where(finite, lp, math.inf).amin(-1)
    lo = torch.where(torch.isfinite(lo), lo, hi)
    step = ((hi - lo) / 254).clamp(min=1e-12)
    codes = ((hi.unsqueeze(-1) - lp) / step.unsqueeze(-1)).round().clamp(0, 254)
    codes = torch.where(finite, codes, torch.full_like(codes, _MISSING)).to(torch.uint8)
    return {"codes": codes, "hi": hi.float(), "step": step.float()}


def _int8_decode(t: dict[str, Tensor]) -> Tensor:
    codes = t["codes"]
    lp = t["hi"].unsqueeze(-1) - codes.float() * t["step"].unsqueeze(-1)
    return torch.where(codes == _MISSING, torch.full_like(lp, -math.inf), lp)


# name -> (encode, decode, bytes per token for the log-probs given k): the one table of log-prob storage
ENCODINGS: Registry[tuple[Callable, Callable, Callable[[int], int]]] = Registry("cache encoding")
ENCODINGS.add("float32", (*_float_codec(torch.float32), lambda k: 4 * k))
ENCODINGS.add("float16", (*_float_codec(torch.float16), lambda k: 2 * k))
ENCODINGS.add("int8", (_int8_encode, _int8_decode, lambda k: k + 8))


def _encoding(name: Any) -> tuple[Callable, Callable, Callable[[int], int]]:
    """The (encode, decode, bytes per token) of encoding ``name``, read from the ``dtype`` argument."""
    try:
        return ENCODINGS.get(name)
    except ValueError as err:
        raise ValueError(f"`dtype`: {err}") from None


def check_encoding(name: Any) -> str:
    _encoding(name)
    return name


def bytes_per_token(k: int, vocab_size: int, dtype: str) -> int:
    """Stored bytes per token (ids + log-probs + the fp32 log tail), shard headers and offsets aside."""
    return k * id_bytes(vocab_size) + _encoding(dtype)[2](k) + 4


def encode(lp: Tensor, dtype: str) -> dict[str, Tensor]:
    return _encoding(dtype)[0](lp)


def log1mexp(x: Tensor) -> Tensor:
    x = x.clamp(max=0)
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def decode(tensors: dict[str, Tensor], dtype: str) -> Tensor:
    """``(N, k)`` float32 log-probs from an encoding's tensors, renormalised to mass ``1 - exp(log_tail)``."""
    lp = _encoding(dtype)[1](tensors)
    if dtype == "float32":
        return lp  # stored as computed: no rounding to undo (k = V reproduces the dense loss exactly)
    lse = torch.logsumexp(lp, -1, keepdim=True)
    target = log1mexp(tensors["log_tail"].float()).unsqueeze(-1)
    return torch.where(torch.isfinite(lse), lp - lse + target, lp)


# ----------------------------------------------------------------------------- shards
def shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_shard(path: Path, offsets: Tensor, ids: Tensor, lp: Tensor, log_tail: Tensor, *, vocab_size: int,
                dtype: str) -> dict[str, Any]:
    """Write one shard atomically (a fresh temporary file, then rename; never through a link at ``path``);
    return its manifest entry."""
    tensors = {"offsets": offsets.long().contiguous(), "ids": pack_ids(ids, id_bytes(vocab_size)).contiguous(),
               "log_tail": log_tail.float().contiguous()}
    tensors.update({k: v.contiguous() for k, v in encode(lp, dtype).items()})
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))
    return {"file": path.name, "rows": int(offsets.numel() - 1), "tokens": int(offsets[-1]),
            "bytes": path.stat().st_size, "sha256": sha256_file(path)}


class ShardReader:
    """Memory-mapped reads of rows of one shard (only the touched byte ranges are read)."""

    def __init__(self, path: Path, dtype: str) -> None:
        self.handle = safe_open(str(path), framework="pt")
        self.offsets = self.handle.get_tensor("offsets")
        self.dtype = dtype
        self.names = [n for n in self.handle.keys() if n != "offsets"]

    def rows(self, local: list[int]) -> tuple[Tensor, Tensor, Tensor]:
        """(ids (N, k) int64, log-probs (N, k) float32, log_tail (N,)) of the rows ``local``, in order."""
        parts: dict[str, list[Tensor]] = {n: [] for n in self.names}
        for i in local:
            a, b = int(self.offsets[i]), int(self.offsets[i + 1])
            for n in self.names:
                parts[n].append(self.handle.get_slice(n)[a:b])
        t = {n: torch.cat(v) for n, v in parts.items()}
        return unpack_ids(t["ids"]), decode(t, self.dtype), t["log_tail"]


def write_json(path: Path, obj: dict[str, Any]) -> None:
    """Write ``obj`` to ``path`` atomically, never through a link."""
    atomic_write(path, json.dumps(obj, indent=1, sort_keys=True))


# ----------------------------------------------------------------------------- records
def shard_done(out: Path, j: int) -> dict[str, Any] | None:
    """The shard's record if the shard was written in full and still matches it, else None (a damaged
    record too: the shard is then written again)."""
    rec, path = out / (shard_name(j) + ".json"), out / shard_name(j)
    if not (rec.is_file() and path.is_file()):
        return None
    try:
        entry = json.loads(rec.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) or "vocab_size" not in entry:
        return None
    return entry if sha256_file(path) == entry["sha256"] else None


def read_json(path: Path, what: str) -> Any:
    """``path``'s JSON; a damaged file is a ValueError naming it (not the parser's line and column)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"`out_dir`: {path} is damaged ({type(err).__name__}: {err}); {what}") from None


def check_plan(plan: Path, s: dict[str, Any]) -> None:
    """Refuse a cache directory written with other settings, data or teacher weights."""
    old = read_json(plan, "delete the cache directory (its shards cannot be trusted) and recache")
    if old == s:
        return
    if isinstance(old, dict) and {k for k in s if old.get(k) != s[k]} == {"teacher_sha256"}:
        raise ValueError(f"`teacher`: its weights differ from those of the teacher that wrote the cache in {plan.parent} "
                         "(plan.json's teacher_sha256): a cache holds one teacher; use another `out_dir` or delete it")
    raise ValueError(f"`out_dir` {plan.parent} holds a cache of other settings or data (plan.json differs): "
                     "use another directory or delete it")
