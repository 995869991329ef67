"""Prompt/completion batches for causal-LM distillation, and completions sampled from a model.

A batch lays every row out as ``[left-padded prompt][right-padded completion]``
so that prompts end at the same column (needed to generate from them) and the
completion tokens start at column ``Lp``. Logits at column t predict the token
at t + 1, so ``labels[:, t] = input_ids[:, t + 1]`` on completion tokens and
``-100`` everywhere else: labels are aligned with the logits, as
:func:`~divmin.distill.token_kd_loss` expects.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["LMCollator", "assemble", "sample_completions", "tokenize_pairs"]

IGNORE = -100


def tokenize_pairs(rows: Any, tokenizer: Any, name: str) -> list[dict[str, list[int]]]:
    """Rows with ``prompt_ids``/``completion_ids`` (token ids) or ``prompt``/``completion`` (text)."""
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise TypeError(f"`{name}`[{i}] must be a dict, got {type(row).__name__}")
        if "prompt_ids" in row and "completion_ids" in row:
            p, c = list(row["prompt_ids"]), list(row["completion_ids"])
        elif "prompt" in row and "completion" in row:
            if tokenizer is None:
                raise ValueError(f"`{name}` holds text: pass a `tokenizer` (or give prompt_ids/completion_ids)")
            p = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
            c = tokenizer(row["completion"], add_special_tokens=False)["input_ids"]
        else:
            raise ValueError(f"`{name}`[{i}] needs keys prompt_ids/completion_ids or prompt/completion")
        if not p:
            raise ValueError(f"`{name}`[{i}] has an empty prompt (a causal LM needs one token to start from)")
        out.append({"prompt_ids": p, "completion_ids": c})
    if not out:
        raise ValueError(f"`{name}` is empty")
    return out


def assemble(prompt: Tensor, prompt_mask: Tensor, completion: Tensor, completion_mask: Tensor) -> dict[str, Tensor]:
    """Model inputs and aligned labels from ``(B, Lp)`` left-padded prompts and ``(B, Lc)`` completions."""
    ids = torch.cat([prompt, completion], dim=1)
    att = torch.cat([prompt_mask, completion_mask], dim=1).long()
    position_ids = (att.cumsum(1) - 1).clamp(min=0)
    labels = torch.full_like(ids, IGNORE)
    lp, lc = prompt.shape[1], completion.shape[1]
    if lc:
        labels[:, lp - 1:lp - 1 + lc] = torch.where(completion_mask.bool(), completion, IGNORE)
    return {"input_ids": ids, "attention_mask": att, "position_ids": position_ids, "labels": labels,
            "prompt_ids": prompt, "prompt_mask": prompt_mask.long()}


class LMCollator:
    """Collate tokenized pairs into :func:`assemble`'s layout, padding with ``pad_id``."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, rows: list[dict[str, list[int]]]) -> dict[str, Tensor]:
        lp = max(len(r["prompt_ids"]) for r in rows)
        lc = max(len(r["completion_ids"]) for r in rows)
        prompt = torch.full((len(rows), lp), self.pad_id, dtype=torch.long)
        pmask = torch.zeros_like(prompt)
        comp = torch.full((len(rows), lc), self.pad_id, dtype=torch.long)
        cmask = torch.zeros_like(comp)
        for i, r in enumerate(rows):
            p, c = r["prompt_ids"], r["completion_ids"]
            prompt[i, lp - len(p):], pmask[i, lp - len(p):] = torch.tensor(p), 1
            if c:
                comp[i, :len(c)], cmask[i, :len(c)] = torch.tensor(c), 1
        return assemble(prompt, pmask, comp, cmask)


@torch.no_grad()
def sample_completions(model: nn.Module, batch: dict[str, Tensor], *, max_new_tokens: int, temperature: float,
                       eos_id: int, pad_id: int) -> dict[str, Tensor]:
    """The batch with its completions replaced by ancestral samples from ``model`` (through EOS).

    Uses ``model.generate`` (Hugging Face) with ``do_sample=True``; tokens after the first
    EOS are padding and carry no label. Randomness comes from the global torch RNG.
    """
    was_training = model.training
    model.eval()
    try:
        out = model.generate(input_ids=batch["prompt_ids"], attention_mask=batch["prompt_mask"], do_sample=True,
                             temperature=temperature, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
                             eos_token_id=eos_id, pad_token_id=pad_id)
    finally:
        model.train(was_training)
    comp = out[:, batch["prompt_ids"].shape[1]:]
    is_eos = (comp == eos_id).long()
    after_eos = (is_eos.cumsum(1) - is_eos) > 0  # strictly after the first EOS
    cmask = (~after_eos).long()
    comp = torch.where(after_eos, torch.full_like(comp, pad_id), comp)
    return assemble(batch["prompt_ids"], batch["prompt_mask"], comp, cmask)
