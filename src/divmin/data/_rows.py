"""Training rows from your files (``divmin train``): JSONL, CSV or a ``datasets`` directory, in TRL's formats.

Formats (as TRL names them):

- preference (``fdpo``): ``prompt`` / ``chosen`` / ``rejected``, strings or message lists;
- prompt-completion (``kd``): ``prompt`` / ``completion``, strings or message lists;
- conversational (``kd``): ``messages``, a list of ``{"role", "content"}``; the last message is the
  completion, the others the prompt;
- prompts only (``fdpg``): ``prompt``;
- language modeling (``mdlm``): ``text`` (packed into blocks by :func:`pack_texts`).

Messages are rendered with the tokenizer's chat template when it has one (the prompt with
``add_generation_prompt=True``, the completion as the text the template adds for it); without
a template every message is written ``"{role}: {content}\\n"``, prompt and completion alike.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Sequence

import torch

__all__ = ["check_columns", "kd_examples", "load_rows", "pack_texts", "prompts_of", "render_messages", "rows_of",
           "tiny_kd_rows", "tiny_preference_rows"]


def load_rows(path: str | Path, *, key: str = "data") -> list[dict[str, Any]]:
    """Rows (dicts) from a ``.jsonl``/``.json`` file, a ``.csv`` file or a ``datasets.save_to_disk`` directory."""
    p = Path(path)
    if p.is_dir():
        return _from_disk(p, key)
    if not p.is_file():
        raise ValueError(f"`{key}`: no file or directory at {p}")
    if p.suffix.lower() == ".csv":
        with p.open(newline="", encoding="utf-8") as fh:
            rows = [dict(r) for r in csv.DictReader(fh)]
    elif p.suffix.lower() in (".jsonl", ".json"):
        rows = _jsonl(p, key)
    else:
        raise ValueError(f"`{key}`: {p} must end in .jsonl, .json or .csv, or be a `datasets` directory")
    if not rows:
        raise ValueError(f"`{key}`: {p} holds no rows")
    return rows


def _jsonl(p: Path, key: str) -> list[dict[str, Any]]:
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() == ".json" and text.lstrip().startswith("["):  # one JSON list of rows
        rows = json.loads(text)
    else:
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"`{key}`: {p}:{n} is not valid JSON ({err.msg})") from None
    for n, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValueError(f"`{key}`: {p} row {n} must be a JSON object, got {type(row).__name__}")
    return [dict(r) for r in rows]


def _from_disk(p: Path, key: str) -> list[dict[str, Any]]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(p))
    except FileNotFoundError:
        raise ValueError(f"`{key}`: {p} is a directory but not one written by datasets' save_to_disk") from None
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise ValueError(f"`{key}`: {p} holds splits {sorted(ds)}; save the one to train on, or name it 'train'")
        ds = ds["train"]
    return [dict(r) for r in ds]


def rows_of(config: Any, key: str, default: Any = None, columns: Sequence[Sequence[str]] = (),
            method: str = "") -> list[dict[str, Any]] | None:
    """The rows of the file ``config.<key>`` names (``data``, ``eval_data``), checked to hold one of the
    ``columns`` sets; ``default()`` when it is null (None without a ``default``)."""
    path = getattr(config, key)
    if path is None:
        return default() if default is not None else None
    rows = load_rows(path, key=key)
    if columns:
        check_columns(rows, columns, key=key, method=method)
    return rows


def check_columns(rows: Sequence[Mapping[str, Any]], options: Sequence[Sequence[str]], *, key: str,
                  method: str) -> tuple[str, ...]:
    """The first column set of ``options`` that the first row has; ValueError naming what is missing."""
    have = set(rows[0])
    for cols in options:
        if set(cols) <= have:
            return tuple(cols)
    want = " or ".join("/".join(c) for c in options)
    missing = sorted(set(options[0]) - have)
    raise ValueError(f"`{key}`: missing column(s) {missing}: {method} needs {want}; found {sorted(have)}")


def _plain(messages: Sequence[Mapping[str, str]]) -> str:
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages)


def _check_messages(value: Any, where: str) -> list[Mapping[str, str]]:
    if not isinstance(value, list) or not value or not all(
            isinstance(m, Mapping) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in value):
        raise ValueError(f"{where} must be a non-empty list of {{'role': str, 'content': str}} messages")
    return value


def render_messages(prompt: list, completion: list, tokenizer: Any) -> tuple[str, str, bool]:
    """(prompt text, completion text, whether a chat template rendered them)."""
    if getattr(tokenizer, "chat_template", None):
        p = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(prompt + completion, tokenize=False)
        if not full.startswith(p):
            raise ValueError("the tokenizer's chat template does not render the prompt as a prefix of the "
                             "conversation; give prompt/completion strings instead")
        return p, full[len(p):], True
    return _plain(prompt), _plain(completion), False


def _ids(tokenizer: Any, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def kd_examples(rows: Sequence[Mapping[str, Any]], tokenizer: Any, *, max_prompt_length: int,
                max_completion_length: int, key: str = "data") -> list[dict[str, list[int]]]:
    """``{"prompt_ids", "completion_ids"}`` rows (for :class:`divmin.distill.DistillTrainer`).

    A prompt keeps its last ``max_prompt_length`` tokens, a completion its first
    ``max_completion_length`` (EOS appended to a completion not rendered by a chat template).
    """
    cols = check_columns(rows, (("prompt", "completion"), ("messages",)), key=key, method="kd")
    eos = getattr(tokenizer, "eos_token_id", None)
    out = []
    for i, row in enumerate(rows):
        where = f"`{key}` row {i}"
        if cols == ("messages",):
            msgs = _check_messages(row["messages"], f"{where} field 'messages'")
            if len(msgs) < 2:
                raise ValueError(f"{where}: 'messages' needs a prompt and a completion (>= 2 messages)")
            prompt, completion, chat = render_messages(msgs[:-1], msgs[-1:], tokenizer)
        elif isinstance(row["prompt"], list):
            prompt, completion, chat = render_messages(_check_messages(row["prompt"], f"{where} field 'prompt'"),
                                                       _check_messages(row["completion"], f"{where} field "
                                                                       "'completion'"), tokenizer)
        elif isinstance(row["prompt"], str) and isinstance(row["completion"], str):
            prompt, completion, chat = row["prompt"], row["completion"], False
        else:
            raise ValueError(f"{where}: 'prompt' and 'completion' must both be strings or both message lists")
        p = _ids(tokenizer, prompt, special=not chat)[-max_prompt_length:]
        c = _ids(tokenizer, completion, special=False) + ([eos] if eos is not None and not chat else [])
        if not p:
            raise ValueError(f"{where}: the prompt tokenizes to no token")
        out.append({"prompt_ids": p, "completion_ids": c[:max_completion_length]})
    return out


def prompts_of(rows: Sequence[Mapping[str, Any]], tokenizer: Any, *, key: str = "data") -> list[str]:
    """The distinct prompt texts of rows with a ``prompt`` column (message lists rendered)."""
    check_columns(rows, (("prompt",),), key=key, method="fdpg")
    out: list[str] = []
    for i, row in enumerate(rows):
        p = row["prompt"]
        if isinstance(p, list):
            p = render_messages(_check_messages(p, f"`{key}` row {i} field 'prompt'"), [], tokenizer)[0]
        if not isinstance(p, str) or not p:
            raise ValueError(f"`{key}` row {i}: 'prompt' must be a non-empty string or message list")
        if p not in out:
            out.append(p)
    return out


# ---------------------------------------------------------------- tiny defaults
_NUM = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def tiny_kd_rows() -> list[dict[str, str]]:
    """The tiny default prompt/completion data: ``"count from three :" -> "four five six"``."""
    rows = []
    for i in range(len(_NUM) - 3):
        rows.append({"prompt": f"count from {_NUM[i]} :", "completion": " ".join(_NUM[i + 1:i + 4])})
        rows.append({"prompt": f"what comes after {_NUM[i]} :", "completion": _NUM[i + 1]})
    return rows


def tiny_preference_rows() -> list[dict[str, str]]:
    """The tiny default preference data: the next number is chosen over the previous one."""
    return [{"prompt": f"what comes after {_NUM[i]} :", "chosen": _NUM[i + 1], "rejected": _NUM[i - 1]}
            for i in range(1, len(_NUM) - 1)]


def pack_texts(texts: list[str], tokenizer: Any, length: int) -> torch.Tensor:
    """(N, length) token ids: every text then EOS, concatenated and cut into full blocks."""
    eos = getattr(tokenizer, "eos_token_id", None)
    stream: list[int] = []
    for text in texts:
        stream += list(tokenizer(text, add_special_tokens=False)["input_ids"]) + ([eos] if eos is not None else [])
    n = len(stream) // length
    if n == 0:
        raise ValueError(f"`data` holds {len(stream)} tokens, fewer than one sequence of `length` {length}")
    return torch.tensor(stream[:n * length], dtype=torch.long).view(n, length)
