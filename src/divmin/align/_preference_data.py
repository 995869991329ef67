"""Preference data in the TRL format: load, render, tokenize, collate.

A row is a mapping with ``prompt``, ``chosen`` and ``rejected``, either

- *standard*: three strings (the responses continue the prompt text), or
- *conversational*: three lists of ``{"role": ..., "content": ...}`` messages
  (``chosen``/``rejected`` hold the response turn(s), usually one assistant
  message).

Conversational rows use the tokenizer's chat template when it has one: the
prompt is rendered with ``add_generation_prompt=True`` and a response is the
text the template adds when its messages are appended. Without a chat template
every message is rendered as ``"{role}: {content}\\n"`` (prompt and responses
alike) and tokenized as a standard row.

Tokenization: prompt and responses are tokenized separately and concatenated
(no merges across the boundary). The prompt gets the tokenizer's special
tokens (e.g. BOS) unless it came from a chat template, which already contains
them; a response rendered without a chat template gets ``eos_token`` appended.
Truncation: a prompt longer than ``max_prompt_length`` keeps its *last*
``max_prompt_length`` tokens (those next to the response); a response is then
cut on the right to ``max_length - len(prompt)`` tokens.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..lm import IGNORE

__all__ = ["PreferenceCollator", "load_preference_rows", "tokenize_preferences"]

FIELDS = ("prompt", "chosen", "rejected")


# ------------------------------------------------------------------ loading
def load_preference_rows(source: Any, *, name: str = "dataset") -> list[dict[str, Any]]:
    """Rows from a list of dicts, a ``datasets.Dataset`` or a JSONL file path; fields checked.

    ``name`` is the argument name used in error messages.
    """
    if isinstance(source, (str, Path)):
        rows = _read_jsonl(Path(source), name)
    elif _is_hf_dataset(source):
        missing = [f for f in FIELDS if f not in source.column_names]
        if missing:
            raise ValueError(f"`{name}` lacks column(s) {missing}; a preference dataset needs {list(FIELDS)}")
        rows = [dict(row) for row in source]
    elif isinstance(source, Sequence) and not isinstance(source, (bytes, bytearray)):
        rows = list(source)
    else:
        raise TypeError(f"`{name}` must be a list of dicts, a datasets.Dataset or a JSONL path, "
                        f"got {type(source).__name__}")
    if not rows:
        raise ValueError(f"`{name}` is empty")
    for i, row in enumerate(rows):
        _check_row(row, i, name)
    return rows


def _is_hf_dataset(source: Any) -> bool:
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a dependency
        return False
    return isinstance(source, datasets.Dataset)


def _read_jsonl(path: Path, name: str) -> list[Any]:
    if not path.is_file():
        raise FileNotFoundError(f"`{name}`: no JSONL file at {path}")
    rows = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"`{name}`: {path}:{lineno} is not valid JSON ({err.msg})") from None
    return rows


def _check_row(row: Any, i: int, name: str) -> None:
    where = f"`{name}` row {i}"
    if not isinstance(row, Mapping):
        raise TypeError(f"{where} must be a dict with {list(FIELDS)}, got {type(row).__name__}")
    for field in FIELDS:
        if field not in row:
            raise ValueError(f"{where}: missing field '{field}' (have {sorted(row)})")
    kinds = {field: _kind(row[field], f"{where} field '{field}'") for field in FIELDS}
    if len(set(kinds.values())) != 1:
        raise ValueError(f"{where}: fields must be all strings or all message lists, got {kinds}")


def _kind(value: Any, where: str) -> str:
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        for m in value:
            if not (isinstance(m, Mapping) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
                raise ValueError(f"{where}: every message must be a dict with string 'role' and 'content', got {m!r}")
        return "messages"
    raise ValueError(f"{where} must be a string or a list of messages, got {type(value).__name__}")


# ---------------------------------------------------------------- rendering
def _plain_join(messages: list[Mapping[str, str]]) -> str:
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages)


def _template_response(tokenizer: Any, prompt: list, response: list, prompt_text: str) -> str:
    full = tokenizer.apply_chat_template(list(prompt) + list(response), tokenize=False)
    if not full.startswith(prompt_text):
        raise ValueError("the tokenizer's chat template does not render the prompt as a prefix of "
                         "prompt + response; pass standard (string) rows instead")
    return full[len(prompt_text):]


def render_row(row: Mapping[str, Any], tokenizer: Any) -> tuple[str, str, str, bool]:
    """(prompt, chosen, rejected) texts and whether a chat template produced them."""
    if isinstance(row["prompt"], str):
        return row["prompt"], row["chosen"], row["rejected"], False
    if getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template(list(row["prompt"]), tokenize=False, add_generation_prompt=True)
        chosen = _template_response(tokenizer, row["prompt"], row["chosen"], prompt)
        rejected = _template_response(tokenizer, row["prompt"], row["rejected"], prompt)
        return prompt, chosen, rejected, True
    return _plain_join(row["prompt"]), _plain_join(row["chosen"]), _plain_join(row["rejected"]), False


# ------------------------------------------------------------- tokenization
def _ids(tokenizer: Any, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def tokenize_preferences(
    source: Any, tokenizer: Any, *, max_length: int, max_prompt_length: int, name: str = "dataset"
) -> list[dict[str, Any]]:
    """Tokenized examples ``{"index", "prompt_ids", "chosen_ids", "rejected_ids"}`` (lists of ints).

    ``index`` is the row's position in ``source``; truncation as in the module docstring.
    """
    if not (isinstance(max_length, int) and isinstance(max_prompt_length, int) and 0 < max_prompt_length < max_length):
        raise ValueError(f"`max_prompt_length` ({max_prompt_length!r}) and `max_length` ({max_length!r}) must be "
                         "ints with 0 < max_prompt_length < max_length")
    eos = getattr(tokenizer, "eos_token_id", None)
    out = []
    for i, row in enumerate(load_preference_rows(source, name=name)):
        prompt, chosen, rejected, chat = render_row(row, tokenizer)
        prompt_ids = _ids(tokenizer, prompt, special=not chat)[-max_prompt_length:]
        budget = max_length - len(prompt_ids)
        example: dict[str, Any] = {"index": i, "prompt_ids": prompt_ids}
        for field, text in (("chosen", chosen), ("rejected", rejected)):
            ids = _ids(tokenizer, text, special=False) + ([eos] if eos is not None and not chat else [])
            if not ids:
                raise ValueError(f"`{name}` row {i}: field '{field}' tokenizes to no token")
            example[f"{field}_ids"] = ids[:budget]
        if not prompt_ids:
            raise ValueError(f"`{name}` row {i}: field 'prompt' tokenizes to no token")
        out.append(example)
    return out


# ---------------------------------------------------------------- collation
class PreferenceCollator:
    """Collate tokenized examples into one concatenated, right-padded batch.

    For B examples returns (rows 0..B-1 are prompt+chosen, rows B..2B-1 prompt+rejected):
        input_ids: (2B, T) long, padded with ``pad_token_id``;
        attention_mask: (2B, T) long, 1 on real tokens;
        labels: (2B, T) long, aligned with the logits as in :mod:`divmin.lm`: ``labels[:, t]``
            is the response token at column t + 1 (the one ``logits[:, t]`` predicts), -100
            on prompt and padding (read by :func:`divmin.lm.sequence_logps`);
        index: (B,) long, the examples' ``index``.
    T is the longest row of the batch. Rows start at column 0 (right padding only), so the
    default positions 0, 1, ... are right and no ``position_ids`` are needed.
    """

    def __init__(self, pad_token_id: int) -> None:
        if isinstance(pad_token_id, bool) or not isinstance(pad_token_id, int) or pad_token_id < 0:
            raise ValueError(f"`pad_token_id` must be an int >= 0, got {pad_token_id!r}")
        self.pad_token_id = pad_token_id

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, Tensor]:
        if not examples:
            raise ValueError("`examples` is empty")
        rows = [(e["prompt_ids"], e[key]) for key in ("chosen_ids", "rejected_ids") for e in examples]
        length = max(len(p) + len(r) for p, r in rows)
        input_ids = torch.full((len(rows), length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        labels = torch.full((len(rows), length), IGNORE, dtype=torch.long)
        for k, (prompt, response) in enumerate(rows):
            n_p, n = len(prompt), len(prompt) + len(response)
            input_ids[k, :n] = torch.tensor(list(prompt) + list(response), dtype=torch.long)
            attention_mask[k, :n] = 1
            labels[k, n_p - 1:n - 1] = input_ids[k, n_p:n]
        index = torch.tensor([int(e["index"]) for e in examples], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, "index": index}
