"""Offline distillation: run the teacher once, keep its top-k log-probabilities on disk, distil later.

:func:`cache_teacher` runs a causal-LM teacher (``torch.no_grad``, batched) over
prompt/completion rows and stores, for every completion token, the k most likely
ids, their log-probabilities ``log_softmax(logits / T)`` and the log of the mass
left off them (the tail), in shards with a manifest (:mod:`._cache_io` for the
layout, the encodings and why safetensors). :class:`TeacherCache` reads it back as
:class:`~divmin.distill.TopKTeacher` rows, so ``token_kd_loss`` and
``DistillTrainer`` (off-policy KD) take it where a teacher model would go.

What the loss then is, for every registry member: the teacher is known on k + 1
outcomes (the k ids and one tail bucket). ``tail="bucket"`` compares the two
coarsened distributions (teacher bucket = its stored tail mass, student bucket = the
student's mass off the k ids): by the data-processing inequality this is at most
the full-logit f-divergence, grows with k (nested top-k sets refine the partition)
and equals it at k = V. ``tail="renormalize"`` spreads the teacher's tail over its k
ids (tail mass 0): it is the dense loss against a teacher with ``-inf`` off its top k,
may lie above or below the full value, and is infinite for members that punish
student mass where the teacher has none (reverse KL, Neyman, Jeffreys) unless the
student's tail is empty too. ``tail="uniform"`` spreads the stored tail mass evenly over
the V - k other ids and compares dense distributions: a guess at the tail's shape
(exact at k = V) that constrains the student there, where the bucket leaves it free.
The quantised encodings renormalise the stored k
log-probabilities to mass ``1 - tail`` (no mass is made or lost by rounding).

Resumable: shard j holds rows ``[j R, (j + 1) R)`` and is written atomically with a
sidecar record; a restarted run skips the shards whose record and checksum hold, so
a run killed half-way and resumed writes the same bytes as one run. The plan
(``plan.json``) records a fingerprint of the teacher's weights (:func:`teacher_fingerprint`):
a resume with another teacher (retrained in place, same name) is refused, so a cache never
mixes two teachers; a shard whose sidecar record is damaged is rewritten, a damaged
``plan.json`` or ``manifest.json`` is named in the error. Under
``torchrun``/``accelerate launch`` process r writes the shards j = r mod W (each shard
is batched identically at every W, so the files do not depend on W) and process 0
writes the manifest after a barrier.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..lm import IGNORE, LMCollator, tokenize_pairs
from ..engine import check_not_link
from . import _cache_io as io
from ._tasks import DISTILL_TASKS
from ._token import TopKTeacher, check_temperature

__all__ = ["cache_teacher", "TeacherCache", "tokenizer_hash", "rows_hash", "teacher_fingerprint", "TAILS"]

TAILS = ("bucket", "renormalize", "uniform")  # how a TeacherCache serves the mass off the top k


def tokenizer_hash(tokenizer: Any) -> str | None:
    """SHA-256 of the tokenizer's vocabulary (token -> id), or None without a tokenizer."""
    if tokenizer is None:
        return None
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else None
    if not isinstance(vocab, dict):
        raise TypeError(f"`tokenizer` must have get_vocab() returning a dict, got {type(tokenizer).__name__}")
    return hashlib.sha256(json.dumps(sorted(vocab.items())).encode()).hexdigest()


def rows_hash(rows: Sequence[dict[str, list[int]]]) -> str:
    """SHA-256 of the token ids of :func:`~divmin.lm.tokenize_pairs` rows (order and row boundaries count)."""
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps([list(map(int, r["prompt_ids"])), list(map(int, r["completion_ids"]))]).encode())
    return h.hexdigest()


_SAMPLE = 1 << 20  # elements of a tensor hashed at most (evenly strided beyond: cheap on a 7B teacher)


@torch.no_grad()
def teacher_fingerprint(teacher: nn.Module) -> str:
    """SHA-256 of the teacher's state_dict: every tensor's name, dtype and shape, and its values (all of
    them up to 2^20 elements, else 2^20 evenly strided ones). Deterministic across devices and runs; a
    retrained teacher changes it. Buffers count as weights do."""
    h = hashlib.sha256()
    for name, t in teacher.state_dict().items():
        h.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        flat = t.detach().reshape(-1)
        step = max(1, -(-flat.numel() // _SAMPLE))
        h.update(flat[::step].contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _rank_world() -> tuple[int, int, bool]:
    """(rank, world size, whether this call started the process group)."""
    if dist.is_available() and not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return dist.get_rank(), dist.get_world_size(), True
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    return 0, 1, False


def _settings(rows: list, tokenizer: Any, top_k: int, temperature: float, dtype: str, rows_per_shard: int,
              teacher_name: str | None, teacher_revision: str | None, teacher_sha256: str) -> dict[str, Any]:
    return {"format": io.FORMAT, "teacher": teacher_name, "teacher_revision": teacher_revision,
            "teacher_sha256": teacher_sha256,
            "tokenizer_hash": tokenizer_hash(tokenizer), "data_hash": rows_hash(rows), "rows": len(rows),
            "top_k": top_k, "temperature": temperature, "dtype": dtype, "rows_per_shard": rows_per_shard}


def _check_args(top_k: Any, dtype: Any, batch_size: Any, rows_per_shard: Any, teacher: Any) -> None:
    if not isinstance(teacher, nn.Module):
        raise TypeError(f"`teacher` must be a torch.nn.Module, got {type(teacher).__name__}")
    for name, v in (("top_k", top_k), ("batch_size", batch_size), ("rows_per_shard", rows_per_shard)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"`{name}` must be an int >= 1, got {v!r}")
    io.check_encoding(dtype)


@torch.no_grad()
def _teacher_rows(teacher: nn.Module, rows: list, collate: LMCollator, top_k: int, temperature: float
                  ) -> tuple[Tensor, Tensor, Tensor, int]:
    """(ids (N, k), log-probs (N, k), log tail (N,), V) of the completion tokens of ``rows`` in order."""
    device = next(teacher.parameters(), torch.empty(0)).device
    batch = {k: v.to(device) for k, v in collate(rows).items()}
    logits = DISTILL_TASKS.get("causal_lm").forward(teacher, batch)
    keep = batch["labels"] != IGNORE
    lp = torch.log_softmax(logits[keep].float() / temperature, dim=-1)
    vocab = lp.shape[-1]
    top = lp.topk(min(top_k, vocab), dim=-1)
    if top_k >= vocab:
        tail = torch.full(top.values.shape[:-1], -math.inf, device=lp.device)
    else:
        tail = io.log1mexp(torch.logsumexp(top.values, -1))
    return top.indices.cpu(), top.values.cpu(), tail.cpu(), vocab


def _check_rows(teacher: nn.Module, rows: list) -> None:
    """Refuse rows the teacher cannot read: ids outside its vocabulary, rows longer than its positions."""
    cfg = getattr(teacher, "config", None)
    emb = teacher.get_input_embeddings() if callable(getattr(teacher, "get_input_embeddings", None)) else None
    vocab = getattr(emb, "num_embeddings", None) or getattr(cfg, "vocab_size", None)
    longest = next((getattr(cfg, k) for k in ("n_positions", "max_position_embeddings")
                    if isinstance(getattr(cfg, k, None), int)), None)
    for i, r in enumerate(rows):
        ids = [*r["prompt_ids"], *r["completion_ids"]]
        if isinstance(vocab, int) and ids and not 0 <= min(ids) <= max(ids) < vocab:
            bad = next(t for t in ids if not 0 <= t < vocab)
            raise ValueError(f"`dataset` row {i}: token id {bad} is outside the teacher's vocabulary [0, {vocab})")
        if longest is not None and len(ids) > longest:
            raise ValueError(f"`dataset` row {i} has {len(ids)} tokens; the teacher reads at most {longest} "
                             "(its position embeddings): shorten the row")


def _write_one(teacher: nn.Module, rows: list, j: int, s: dict[str, Any], collate: LMCollator,
               batch_size: int, out: Path) -> dict[str, Any]:
    R = s["rows_per_shard"]
    part = rows[j * R:(j + 1) * R]
    ids, lps, tails, vocab = [], [], [], 0
    for b in range(0, len(part), batch_size):
        i, lp, t, vocab = _teacher_rows(teacher, part[b:b + batch_size], collate, s["top_k"], s["temperature"])
        ids.append(i), lps.append(lp), tails.append(t)
    lengths = torch.tensor([len(r["completion_ids"]) for r in part], dtype=torch.long)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    entry = io.write_shard(out / io.shard_name(j), offsets, torch.cat(ids), torch.cat(lps), torch.cat(tails),
                           vocab_size=vocab, dtype=s["dtype"])
    entry["vocab_size"] = vocab
    io.write_json(out / (io.shard_name(j) + ".json"), entry)
    return entry


def cache_teacher(teacher: nn.Module, dataset: Any, out_dir: str | os.PathLike, *, top_k: int,
                  temperature: float = 1.0, dtype: str = "int8", tokenizer: Any = None, pad_id: int | None = None,
                  batch_size: int = 16, rows_per_shard: int = 1024, teacher_name: str | None = None,
                  teacher_revision: str | None = None) -> dict[str, Any]:
    """Run ``teacher`` once over ``dataset`` and write its top-k cache to ``out_dir``; return the manifest.

    Args:
        teacher: a causal LM (``forward(input_ids, attention_mask, position_ids)`` with ``.logits``).
        dataset: prompt/completion rows, as :func:`~divmin.lm.tokenize_pairs` reads them.
        out_dir: the cache directory; a run into a directory with shards of the same settings
            resumes (finished shards are kept), one with other settings is refused.
        top_k: ids kept per token (k >= V keeps the whole distribution, tail ``-inf``).
        temperature: T of ``log_softmax(logits / T)``; a :class:`TeacherCache` only serves this T.
        dtype: log-prob encoding, ``"int8"`` (per-row scale, k + 8 bytes), ``"float16"`` or ``"float32"``.
        tokenizer: tokenises text rows; its vocabulary hash goes in the manifest.
        pad_id: padding id of the batches (default: the tokenizer's pad/EOS id, else 0).
        batch_size: rows per teacher forward. rows_per_shard: rows per shard file.
        teacher_name / teacher_revision: recorded in the manifest (default: the model's
            ``config.name_or_path`` and ``config.revision`` / commit hash if any).
    """
    _check_args(top_k, dtype, batch_size, rows_per_shard, teacher)
    temperature = check_temperature(temperature)
    rows = tokenize_pairs(dataset, tokenizer, "dataset")
    _check_rows(teacher, rows)
    cfg = getattr(teacher, "config", None)
    name = teacher_name or getattr(cfg, "name_or_path", None) or type(teacher).__name__
    revision = teacher_revision or getattr(cfg, "_commit_hash", None)
    s = _settings(rows, tokenizer, top_k, temperature, dtype, rows_per_shard, name, revision,
                  teacher_fingerprint(teacher))
    if pad_id is None:
        pad_id = next((v for v in (getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "eos_token_id", None))
                       if isinstance(v, int)), 0)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plan = check_not_link(out / "plan.json")  # not even read through a link: it may be rewritten
    if plan.exists():
        io.check_plan(plan, s)
    rank, world, started = _rank_world()
    if rank == 0 and not plan.exists():
        io.write_json(plan, s)
    was_training = teacher.training
    teacher.eval()
    collate = LMCollator(pad_id)
    n_shards = math.ceil(len(rows) / rows_per_shard)
    try:
        for j in range(rank, n_shards, world):
            if io.shard_done(out, j) is None:
                _write_one(teacher, rows, j, s, collate, batch_size, out)
        if world > 1:
            dist.barrier()
        manifest = _finish(out, s, n_shards) if rank == 0 else None
        if world > 1:
            dist.barrier()
    finally:
        teacher.train(was_training)
        if started:
            dist.destroy_process_group()
    return manifest if manifest is not None else io.read_json(out / io.MANIFEST, "run cache_teacher again")


def _finish(out: Path, s: dict[str, Any], n_shards: int) -> dict[str, Any]:
    shards = [io.read_json(out / (io.shard_name(j) + ".json"), "run cache_teacher again to rewrite its shard")
              for j in range(n_shards)]
    vocab = {e.pop("vocab_size") for e in shards}
    if len(vocab) != 1:
        raise ValueError(f"`out_dir`: the shards disagree on the teacher's vocabulary size: {sorted(vocab)}")
    v = vocab.pop()
    tokens = sum(e["tokens"] for e in shards)
    k = min(s["top_k"], v)
    manifest = {**s, "top_k": k, "vocab_size": v, "id_bytes": io.id_bytes(v), "tokens": tokens, "shards": shards,
                "bytes_per_token": io.bytes_per_token(k, v, s["dtype"]),
                "bytes_per_token_on_disk": sum(e["bytes"] for e in shards) / max(tokens, 1)}
    io.write_json(out / io.MANIFEST, manifest)
    return manifest


class TeacherCache:
    """A teacher read from a :func:`cache_teacher` directory: rows of the dataset -> :class:`TopKTeacher`.

    Args:
        out_dir: the cache directory (with ``manifest.json``).
        tail: ``"bucket"`` or ``"renormalize"`` (module docstring), passed on to the TopKTeacher;
            or ``"uniform"``: the teacher's tail mass spread evenly over the V - k other ids, served
            as dense ``(N, V)`` logits (scaled by T, so ``token_kd_loss(..., temperature=T)`` sees
            the cached distribution); memory O(N V) as a live teacher's, compute none.
        verify: check every shard's SHA-256 against the manifest now (a mismatch raises).

    ``teacher(rows)`` (``rows`` a sequence or 1-D tensor of dataset row indices) returns
    the completion tokens of those rows in order, as :class:`TopKTeacher` with
    ``(N, k)`` log-probabilities and ids: the rows a causal LM batch of those rows keeps
    (labels not ``IGNORE``, row-major). Shards are memory-mapped; only touched rows are read.
    """

    def __init__(self, out_dir: str | os.PathLike, *, tail: str = "bucket", verify: bool = True) -> None:
        self.dir = Path(out_dir)
        path = self.dir / io.MANIFEST
        if not path.exists():
            raise ValueError(f"`out_dir` {self.dir} has no {io.MANIFEST}: not a finished teacher cache")
        self.manifest = io.read_json(path, "rewrite the cache with cache_teacher")
        if not isinstance(self.manifest, dict) or self.manifest.get("format") != io.FORMAT:
            fmt = self.manifest.get("format") if isinstance(self.manifest, dict) else self.manifest
            raise ValueError(f"`out_dir`: {path} is format {fmt!r}, this reader reads {io.FORMAT!r}")
        if tail not in TAILS:
            raise ValueError(f"`tail` must be one of {TAILS}, got {tail!r}")
        self.tail = tail
        if verify:
            self.verify()
        self._readers: dict[int, io.ShardReader] = {}

    temperature = property(lambda self: float(self.manifest["temperature"]))
    top_k = property(lambda self: int(self.manifest["top_k"]))
    vocab_size = property(lambda self: int(self.manifest["vocab_size"]))
    tokens = property(lambda self: int(self.manifest["tokens"]))

    def __len__(self) -> int:
        return int(self.manifest["rows"])

    def verify(self) -> None:
        """Raise ValueError naming the first shard whose SHA-256 differs from the manifest's."""
        for e in self.manifest["shards"]:
            p = self.dir / e["file"]
            if not p.exists() or io.sha256_file(p) != e["sha256"]:
                raise ValueError(f"`out_dir`: teacher cache shard {p} is missing or corrupted (SHA-256 differs from the "
                                 "manifest's): rewrite it with cache_teacher")

    def check(self, rows: Sequence[dict[str, list[int]]] | None = None, *, temperature: float | None = None,
              tokenizer: Any = None) -> None:
        """Refuse, with one line, a student setting this cache was not made for.

        ``rows``: the student's tokenized training rows (their ids must hash as the cached ones);
        ``temperature``: the distillation T; ``tokenizer``: the student's (vocabulary hash).
        """
        m = self.manifest
        if temperature is not None and not math.isclose(float(temperature), self.temperature, rel_tol=1e-9):
            raise ValueError(f"teacher cache {self.dir} was made at temperature {self.temperature}, "
                             f"the distillation uses {temperature}: recache at that temperature")
        if tokenizer is not None and m["tokenizer_hash"] not in (None, tokenizer_hash(tokenizer)):
            raise ValueError(f"teacher cache {self.dir} was made with another tokenizer (vocabulary hash differs)")
        if rows is not None and (len(rows) != len(self) or rows_hash(rows) != m["data_hash"]):
            raise ValueError(f"teacher cache {self.dir} was made for other token ids ({len(self)} rows, hash "
                             f"{m['data_hash'][:12]}) than the student's data ({len(rows)} rows)")

    def topk_mass(self) -> float:
        """The teacher's mean probability on its top k over the cached tokens (1 - the mean tail mass)."""
        total = sum(float((-torch.expm1(self._reader(j).handle.get_tensor("log_tail").double())).sum())
                    for j in range(len(self.manifest["shards"])))
        return total / max(self.tokens, 1)

    def _reader(self, j: int) -> io.ShardReader:
        if j not in self._readers:
            path = self.dir / self.manifest["shards"][j]["file"]
            try:
                self._readers[j] = io.ShardReader(path, self.manifest["dtype"])
            except Exception as err:  # safetensors' own error types (a truncated header) and OSError alike
                why = str(err).strip() or type(err).__name__
                raise ValueError(f"`out_dir`: teacher cache shard {path} is unreadable ({why}): it is missing or "
                                 "damaged; rewrite it with cache_teacher") from None
        return self._readers[j]

    def __call__(self, rows: Sequence[int] | Tensor, *,
                 device: torch.device | str | None = None) -> TopKTeacher | Tensor:
        idx = rows.tolist() if isinstance(rows, Tensor) else list(rows)
        n, R = len(self), int(self.manifest["rows_per_shard"])
        if any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n for i in idx):
            raise ValueError(f"`rows` must be dataset row indices in [0, {n})")
        ids, lps, tails = [], [], []
        start = 0
        while start < len(idx):  # runs of consecutive indices in one shard share a read call
            j, end = idx[start] // R, start + 1
            while end < len(idx) and idx[end] // R == j:
                end += 1
            i, lp, t = self._reader(j).rows([r - j * R for r in idx[start:end]])
            ids.append(i), lps.append(lp), tails.append(t)
            start = end
        k = self.top_k
        ids_t = torch.cat(ids) if ids else torch.zeros(0, k, dtype=torch.long)
        lp_t = torch.cat(lps) if lps else torch.zeros(0, k)
        if self.tail == "uniform":
            tail_t = torch.cat(tails) if tails else torch.zeros(0)
            return self._uniform_tail(lp_t, ids_t, tail_t).to(device)
        return TopKTeacher(lp_t.to(device), ids_t.to(device), self.tail)

    def _uniform_tail(self, lp: Tensor, ids: Tensor, log_tail: Tensor) -> Tensor:
        """(N, V) logits x with softmax(x / T) = the teacher on its k ids and its tail spread evenly over the rest."""
        rest = self.vocab_size - ids.shape[-1]
        fill = log_tail - math.log(rest) if rest > 0 else torch.full_like(log_tail, -math.inf)
        dense = fill.unsqueeze(-1).expand(-1, self.vocab_size).clone().scatter_(-1, ids, lp)
        return dense * self.temperature  # token_kd_loss divides teacher logits by T again

    def attach(self, rows: list, collate: Any, config: Any, tokenizer: Any) -> tuple[list, Any]:
        """For ``DistillTrainer``: refuse what a cache cannot serve, tag rows with their index."""
        bad = [f"{name}={getattr(config, name)!r}" for name, ok in _OFF_POLICY if getattr(config, name) not in ok]
        if bad:
            raise ValueError("a TeacherCache serves off-policy causal-LM KD on the cached rows only; got "
                             + ", ".join(bad))
        self.check(rows, temperature=config.temperature, tokenizer=tokenizer)
        return [dict(r, cache_row=i) for i, r in enumerate(rows)], _IndexedCollate(collate)


# DistillConfig fields a cache cannot serve unless they hold one of these values (no new completions, logits
# needed; fused None resolves to unfused with a cache)
_OFF_POLICY = (("task", ("causal_lm",)), ("lmbda", (0.0,)), ("seq_kd", (False,)), ("fused", (False, None)),
               ("sinkd_weight", (0.0,)))


class _IndexedCollate:
    """The task's collator, plus ``cache_row``: (B,) the batch rows' dataset indices (rows that carry one)."""

    def __init__(self, collate: Any) -> None:
        self.collate = collate

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Tensor]:
        batch = self.collate(rows)
        if rows and "cache_row" not in rows[0]:  # evaluation rows: not cached
            return batch
        batch["cache_row"] = torch.tensor([r["cache_row"] for r in rows], dtype=torch.long)
        return batch

    def __repr__(self) -> str:
        m = self.manifest
        return (f"TeacherCache({str(self.dir)!r}, teacher={m['teacher']!r}, k={self.top_k}, V={self.vocab_size}, "
                f"T={self.temperature}, dtype={m['dtype']!r}, rows={len(self)}, tokens={self.tokens})")
