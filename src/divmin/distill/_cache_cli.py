"""``divmin distill cache``: write a teacher cache from the command line (also under torchrun/accelerate).

    divmin distill cache --teacher DIR_OR_NAME --data ROWS.jsonl --out CACHE_DIR --top-k 32
                         [--temperature 1.0] [--dtype int8] [--tokenizer DIR] [--revision REV]
                         [--batch-size 16] [--rows-per-shard 1024] [--device cpu|cuda]

The teacher loads with ``transformers.AutoModelForCausalLM.from_pretrained`` (a local
directory works offline); rows come from a JSON-lines file (``prompt``/``completion`` text or
``prompt_ids``/``completion_ids``) or a ``datasets.Dataset.save_to_disk`` directory. Run it
again into the same ``--out`` to resume. Under ``torchrun --nproc_per_node N`` each process
writes its share of the shards on its own device.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_cache_parser", "cache_command"]


def add_cache_parser(sub: Any) -> None:
    """Register ``distill cache`` on the top-level subparsers ``sub``."""
    distill = sub.add_parser("distill", help="distillation tools (teacher caches)")
    tools = distill.add_subparsers(dest="distill_command", required=True)
    p = tools.add_parser("cache", help="run a teacher once over a dataset and store its top-k log-probs",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="a Hugging Face causal LM: local directory or hub name")
    p.add_argument("--data", required=True, help="rows: a .jsonl file or a datasets save_to_disk directory")
    p.add_argument("--out", required=True, help="cache directory (written, or resumed when it holds shards)")
    p.add_argument("--top-k", type=int, required=True, help="ids kept per token")
    p.add_argument("--temperature", type=float, default=1.0, help="T of log_softmax(logits / T)")
    p.add_argument("--dtype", default="int8", help="log-prob encoding: int8, float16 or float32")
    p.add_argument("--tokenizer", default=None, help="tokenizer (default: the teacher's, if it has one)")
    p.add_argument("--revision", default=None, help="teacher revision (recorded in the manifest)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--rows-per-shard", type=int, default=1024)
    p.add_argument("--device", default=None, help="default: cuda:LOCAL_RANK when CUDA is available, else cpu")


def _rows(path: str) -> list[dict[str, Any]]:
    p = Path(path)
    if p.is_dir():
        from datasets import load_from_disk

        return list(load_from_disk(str(p)))
    if not p.is_file():
        raise ValueError(f"`--data` {path} is neither a file nor a directory")
    rows = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as err:
                raise ValueError(f"`--data` {path} line {n} is not JSON ({err})") from None
    return rows


def _tokenizer(name: str | None, teacher: str, revision: str | None) -> Any:
    from transformers import AutoTokenizer

    local = Path(teacher)
    if name is None and local.is_dir() and not any((local / f).exists() for f in _TOKENIZER_FILES):
        return None  # a teacher directory without tokenizer files: rows must hold ids
    return AutoTokenizer.from_pretrained(name or teacher, revision=None if name else revision)


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def _device(name: str | None) -> str:
    """``--device``, checked before the teacher loads (default: cuda:LOCAL_RANK with CUDA, else cpu)."""
    import torch

    if name is None:
        return f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"`--device` {name!r} is not a device (cpu, cuda, cuda:N)") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"`--device` {name}: no CUDA device here (this torch build or machine has none); "
                             "use --device cpu")
        if device.index is not None and device.index >= count:
            raise ValueError(f"`--device` {name}: only {count} CUDA device(s) here (cuda:0 .. cuda:{count - 1})")
    return name


def _teacher(name: str, revision: str | None, device: str) -> Any:
    """The teacher model; any loading failure (a pickle checkpoint refused, a missing file) is one ValueError."""
    import pickle

    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(name, revision=revision)
    except pickle.UnpicklingError:
        # transformers reads pytorch_model.bin with torch.load(weights_only=True): a pickle holding more than
        # tensors is refused, and stays refused here (loading it could run code)
        raise ValueError(f"`--teacher` {name}: its checkpoint is a pickle that holds more than tensors; refused "
                         "(loading it could run code). Save the teacher with safetensors "
                         "(save_pretrained(..., safe_serialization=True))") from None
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"`--teacher` {name} could not be loaded: {first}") from None
    return model.to(device)


def cache_command(args: argparse.Namespace) -> int:
    """Handle ``divmin distill cache``; mistakes get one line on stderr and exit status 2."""
    from ._cache import cache_teacher
    from ._cache_io import check_encoding

    try:
        check_encoding(args.dtype)  # before the teacher loads: a typo costs no minutes
        if args.top_k < 1:
            raise ValueError(f"`--top-k` must be >= 1, got {args.top_k}")
        device = _device(args.device)
        rows = _rows(args.data)
        teacher = _teacher(args.teacher, args.revision, device)
        manifest = cache_teacher(teacher, rows, args.out, top_k=args.top_k, temperature=args.temperature,
                                 dtype=args.dtype, tokenizer=_tokenizer(args.tokenizer, args.teacher, args.revision),
                                 batch_size=args.batch_size, rows_per_shard=args.rows_per_shard,
                                 teacher_name=args.teacher, teacher_revision=args.revision)
    except (ValueError, TypeError, OSError) as err:
        print(f"divmin: error: {err}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"wrote {args.out}: {manifest['tokens']} tokens, k={manifest['top_k']}, V={manifest['vocab_size']}, "
              f"{manifest['dtype']}, {manifest['bytes_per_token_on_disk']:.1f} bytes/token on disk, "
              f"{len(manifest['shards'])} shards")
    return 0
