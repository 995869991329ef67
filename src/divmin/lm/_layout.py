"""The one batch layout for causal-LM prompt/completion pairs, with labels aligned to the logits.

A batch lays every row out as ``[left-padded prompt][right-padded completion]``:
prompts end at the same column ``Lp`` (so a sampler can continue all of them at
once) and completions start there. A causal LM's logits at column t predict the
token at column t + 1, so the labels are stored *aligned with the logits*:
``labels[:, t]`` is the token that ``logits[:, t]`` predicts, i.e.
``input_ids[:, t + 1]`` on completion tokens, and :data:`IGNORE` (-100)
everywhere else. Then ``F.cross_entropy(logits.flatten(0, 1), labels.flatten(),
ignore_index=-100)`` is the completion loss with no shift, and
:func:`~divmin.lm.sequence_logps` and ``divmin.distill.token_kd_loss`` read the
same labels.

Left padding moves the first real token of a row to a column > 0, so the batch
carries ``position_ids`` that restart at 0 on every row's first real token
(``cumsum(attention_mask) - 1``); pass them to the model, whose default
positions (0, 1, ...) would be wrong on padded rows.

Once the completions are final (nothing more to sample), :func:`compact` rolls
each row to column 0 and cuts the all-padding columns: the same tokens,
positions and labels in the same order, at the width of the longest row.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["IGNORE", "LMCollator", "assemble", "compact", "tokenize_pairs"]

IGNORE = -100  # label of positions that carry no loss (as F.cross_entropy's default ignore_index)


def tokenize_pairs(rows: Any, tokenizer: Any, name: str = "dataset") -> list[dict[str, list[int]]]:
    """Token-id pairs ``{"prompt_ids", "completion_ids"}`` from rows of ids or of text.

    Args:
        rows: an iterable of dicts, each with ``prompt_ids``/``completion_ids``
            (lists of token ids) or ``prompt``/``completion`` (text).
        tokenizer: a Hugging Face tokenizer for text rows (no special tokens
            are added); may be None when every row holds ids.
        name: the argument name used in error messages.

    Every prompt must have at least one token (a causal LM needs one to start
    from); a completion may be empty.

    >>> tokenize_pairs([{"prompt_ids": [5, 6], "completion_ids": [7, 1]}], None)
    [{'prompt_ids': [5, 6], 'completion_ids': [7, 1]}]
    """
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"`{name}`[{i}] must be a dict, got {type(row).__name__}")
        if "prompt_ids" in row and "completion_ids" in row:
            p, c = list(row["prompt_ids"]), list(row["completion_ids"])
        elif "prompt" in row and "completion" in row:
            if tokenizer is None:
                raise ValueError(f"`{name}` holds text: pass a `tokenizer` (or give prompt_ids/completion_ids)")
            p = list(tokenizer(row["prompt"], add_special_tokens=False)["input_ids"])
            c = list(tokenizer(row["completion"], add_special_tokens=False)["input_ids"])
        else:
            raise ValueError(f"`{name}`[{i}] needs keys prompt_ids/completion_ids or prompt/completion")
        if not p:
            raise ValueError(f"`{name}`[{i}] has an empty prompt (a causal LM needs one token to start from)")
        p, c = _int_ids(p, name, i), _int_ids(c, name, i)
        out.append({"prompt_ids": p, "completion_ids": c})
    if not out:
        raise ValueError(f"`{name}` is empty")
    return out


def _int_ids(ids: list[Any], name: str, i: int) -> list[int]:
    """Token ids as Python ints >= 0 (NumPy integers and 0-d integer tensors accepted; 1.5 or True refused)."""
    # fast path for plain ints (the collator re-checks every row of every batch); `type is int` refuses bools
    if all(type(t) is int for t in ids) and (not ids or min(ids) >= 0):
        return list(ids)
    out = []
    for t in ids:
        if isinstance(t, Tensor) and t.ndim == 0 and not (t.is_floating_point() or t.is_complex()
                                                          or t.dtype == torch.bool):
            t = int(t)
        if isinstance(t, bool) or not isinstance(t, numbers.Integral) or t < 0:
            raise ValueError(f"`{name}`[{i}] holds a token id that is not an int >= 0: {t!r}")
        out.append(int(t))
    return out


def _check_pair(ids: Any, mask: Any, ids_name: str, mask_name: str, rows: int | None) -> None:
    if not isinstance(ids, Tensor) or ids.dim() != 2 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise TypeError(f"`{ids_name}` must be a 2-D integer tensor of token ids, got "
                        f"{getattr(ids, 'dtype', type(ids).__name__)} {tuple(getattr(ids, 'shape', ()))}")
    if not isinstance(mask, Tensor) or mask.shape != ids.shape:
        raise ValueError(f"`{mask_name}` must be a tensor of the shape of `{ids_name}` {tuple(ids.shape)}, "
                         f"got {tuple(getattr(mask, 'shape', ())) or type(mask).__name__}")
    if ids.shape[0] == 0:
        raise ValueError(f"`{ids_name}` has no rows")
    if rows is None and ids.shape[1] == 0:
        raise ValueError(f"`{ids_name}` must hold at least one token per row (the first completion token follows it)")
    if rows is not None and ids.shape[0] != rows:
        raise ValueError(f"`{ids_name}` has {ids.shape[0]} rows, the prompts have {rows}")


def assemble(prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor,
             completion_mask: Tensor) -> dict[str, Tensor]:
    """Model inputs and aligned labels from left-padded prompts and right-padded completions.

    Args:
        prompt_ids: (B, Lp) prompts, left-padded.
        prompt_mask: (B, Lp) 1 on real prompt tokens.
        completion_ids: (B, Lc) completions, right-padded (Lc may be 0).
        completion_mask: (B, Lc) 1 on the completion tokens that count (e.g. up
            to and including the first EOS).

    Returns:
        ``input_ids`` (B, Lp + Lc); ``attention_mask`` (B, Lp + Lc) long;
        ``position_ids`` (B, Lp + Lc), 0 at each row's first real token;
        ``labels`` (B, Lp + Lc), ``labels[:, t] = input_ids[:, t + 1]`` where
        column t + 1 is a counted completion token, :data:`IGNORE` elsewhere;
        and the prompts again as ``prompt_ids`` / ``prompt_mask`` (long), to
        sample new completions from.

    >>> b = assemble(torch.tensor([[0, 5], [4, 5]]), torch.tensor([[0, 1], [1, 1]]),
    ...              torch.tensor([[7, 1], [1, 0]]), torch.tensor([[1, 1], [1, 0]]))
    >>> b["labels"].tolist()
    [[-100, 7, 1, -100], [-100, 1, -100, -100]]
    >>> b["position_ids"].tolist()
    [[0, 0, 1, 2], [0, 1, 2, 2]]
    """
    _check_pair(prompt_ids, prompt_mask, "prompt_ids", "prompt_mask", None)
    _check_pair(completion_ids, completion_mask, "completion_ids", "completion_mask", prompt_ids.shape[0])
    ids = torch.cat([prompt_ids, completion_ids.to(prompt_ids)], dim=1)
    att = torch.cat([prompt_mask.long(), completion_mask.long()], dim=1)
    position_ids = (att.cumsum(1) - 1).clamp(min=0)
    labels = torch.full_like(ids, IGNORE)
    lp, lc = prompt_ids.shape[1], completion_ids.shape[1]
    if lc:
        # the last prompt column predicts the first completion token, and so on
        labels[:, lp - 1:lp - 1 + lc] = torch.where(completion_mask.bool(), completion_ids.to(ids), IGNORE)
    return {"input_ids": ids, "attention_mask": att, "position_ids": position_ids, "labels": labels,
            "prompt_ids": prompt_ids, "prompt_mask": prompt_mask.long()}


def compact(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """The batch with each row's tokens moved to column 0 and the width cut to the longest row.

    :func:`assemble` left-pads prompts so that a sampler can continue them all
    from one column; a model run on the batch as it is spends work on width
    ``max prompt + max completion`` rather than ``max(prompt + completion)``.
    Rolling row b left by its left padding ``s_b`` (``x'[b, t] = x[b, t + s_b]``)
    keeps every relation the losses read: labels stay aligned with the logits,
    ``position_ids`` still restart at 0, the counted positions keep their
    row-major order, and a causal LM's outputs on real tokens do not change
    (the padding is now on the right, after every real token). Other entries
    (``prompt_ids``, ``prompt_mask``, anything a caller added) are kept as they are.

    Args:
        batch: :func:`assemble`'s layout: ``input_ids``, ``attention_mask``,
            ``position_ids`` and ``labels``, each (B, T), real tokens contiguous per row.

    Returns:
        A new dict with those four entries (B, T') where T' is the longest row's
        token count; the batch itself when no column is all padding.

    >>> b = compact(assemble(torch.tensor([[0, 5], [4, 5]]), torch.tensor([[0, 1], [1, 1]]),
    ...                      torch.tensor([[7, 1], [1, 0]]), torch.tensor([[1, 1], [1, 0]])))
    >>> b["input_ids"].tolist(), b["labels"].tolist()
    ([[5, 7, 1], [4, 5, 1]], [[7, 1, -100], [-100, 1, -100]])
    """
    att = batch["attention_mask"]
    length = att.sum(1)
    width = max(int(length.max()), 1) if att.numel() else att.shape[1]
    if width == att.shape[1]:  # the longest row fills the batch: rolling would cut nothing
        return batch
    shift = (att.cumsum(1) == 0).sum(1)  # left padding of each row
    cols = torch.arange(width, device=att.device)
    src = (cols[None] + shift[:, None]).clamp(max=att.shape[1] - 1)
    real = cols[None] < length[:, None]
    out = dict(batch)
    for key in ("input_ids", "position_ids"):
        out[key] = batch[key].gather(1, src)
    out["attention_mask"] = torch.where(real, att.gather(1, src), 0)
    out["labels"] = torch.where(real, batch["labels"].gather(1, src), IGNORE)
    return out


class LMCollator:
    """Collate :func:`tokenize_pairs` rows into :func:`assemble`'s layout, padding with ``pad_id``.

    >>> batch = LMCollator(pad_id=0)([{"prompt_ids": [5], "completion_ids": [7, 1]},
    ...                               {"prompt_ids": [4, 5], "completion_ids": [1]}])
    >>> batch["input_ids"].tolist()
    [[0, 5, 7, 1], [4, 5, 1, 0]]
    >>> batch["labels"].tolist()
    [[-100, 7, 1, -100], [-100, 1, -100, -100]]
    """

    def __init__(self, pad_id: int) -> None:
        if isinstance(pad_id, bool) or not isinstance(pad_id, int) or pad_id < 0:
            raise ValueError(f"`pad_id` must be an int >= 0, got {pad_id!r}")
        self.pad_id = pad_id

    def __call__(self, rows: list[dict[str, list[int]]]) -> dict[str, Tensor]:
        if isinstance(rows, (str, bytes, Mapping)) or not isinstance(rows, Sequence):
            raise TypeError(f"`rows` must be a list of dicts, got {type(rows).__name__}")
        rows = tokenize_pairs(rows, None, "rows")
        lp = max(len(r["prompt_ids"]) for r in rows)
        lc = max(len(r["completion_ids"]) for r in rows)
        pad = self.pad_id
        # one tensor per field from padded lists: a small copy per row would cost more than the rows
        prompt = torch.tensor([[pad] * (lp - len(r["prompt_ids"])) + r["prompt_ids"] for r in rows], dtype=torch.long)
        pmask = torch.tensor([[0] * (lp - len(r["prompt_ids"])) + [1] * len(r["prompt_ids"]) for r in rows],
                             dtype=torch.long)
        comp = torch.tensor([r["completion_ids"] + [pad] * (lc - len(r["completion_ids"])) for r in rows],
                            dtype=torch.long).reshape(len(rows), lc)
        cmask = torch.tensor([[1] * len(r["completion_ids"]) + [0] * (lc - len(r["completion_ids"])) for r in rows],
                             dtype=torch.long).reshape(len(rows), lc)
        return assemble(prompt, pmask, comp, cmask)
