"""Causal-LM logits at the counted positions only: the output projection on the rows that carry a label.

A causal LM's head maps every position's hidden state (B, T, H) to logits
(B, T, V); a loss over completion tokens reads only the N positions whose label
is not :data:`~divmin.lm.IGNORE`. :func:`counted_logits` runs the model's body
to hidden states, gathers those N rows and applies the head to them alone:
``head(h[keep])`` equals ``head(h)[keep]`` row for row, so the logits (and their
gradients) are the full forward's, at N x V instead of B x T x V work and memory.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ._layout import IGNORE

__all__ = ["counted_logits"]

# config fields of Hugging Face models whose forward transforms the head's output (a softcap,
# a scale): those models take the full forward, which applies them
_POST_HEAD = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


def _split(model: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """(body returning hidden states, head) of a Hugging Face causal LM, or None when it has no such split."""
    if getattr(model, "peft_config", None) is not None:  # a peft wrapper: its base_model returns logits
        active = getattr(model, "active_peft_config", None)
        if getattr(active, "is_prompt_learning", True) or not callable(getattr(model, "get_base_model", None)):
            return None  # prompt learning adds virtual tokens in the wrapper's own forward
        model = model.get_base_model()  # adapters (LoRA ...) live inside it, in place
    get_head = getattr(model, "get_output_embeddings", None)
    body = getattr(model, "base_model", None)
    head = get_head() if callable(get_head) else None
    if not isinstance(head, nn.Linear) or not isinstance(body, nn.Module) or body is model:
        return None
    config = getattr(model, "config", None)
    if any(getattr(config, name, None) not in (None, 1, 1.0) for name in _POST_HEAD):
        return None
    return body, head


def counted_logits(model: nn.Module, batch: dict[str, Tensor], *, ignore_index: int = IGNORE) -> Tensor:
    """The logits of ``model`` at the positions whose label counts, in row-major order.

    Args:
        model: a causal LM called as ``model(input_ids, attention_mask, position_ids)``
            returning ``.logits`` (or a tensor). A Hugging Face model whose head is a
            ``nn.Linear`` after ``model.base_model`` (and that applies nothing after it)
            gets the head on the counted rows only; any other model, the full forward.
        batch: :func:`~divmin.lm.assemble`'s layout (``input_ids``, ``attention_mask``,
            ``position_ids``, ``labels``; each (B, T)).
        ignore_index: the label of positions that do not count.

    Returns:
        (N, V) logits, N the number of labels not equal to ``ignore_index``; equal to
        ``model(...).logits[labels != ignore_index]``.
    """
    labels, ids = batch.get("labels"), batch.get("input_ids")
    if not isinstance(labels, Tensor) or not isinstance(ids, Tensor) or labels.shape != ids.shape \
            or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise TypeError(f"`batch` must hold integer `labels` of the shape of its `input_ids` "
                        f"{tuple(getattr(ids, 'shape', ()))}, got {type(labels).__name__} "
                        f"{tuple(getattr(labels, 'shape', ()))}")
    embed = model.get_input_embeddings() if callable(getattr(model, "get_input_embeddings", None)) else None
    vocab = getattr(embed, "num_embeddings", None)
    if ids.numel() and vocab is not None and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
        raise ValueError(f"`batch`'s `input_ids` must be token ids in [0, {vocab}) (the model's vocabulary), "
                         f"got {int(ids.min())} to {int(ids.max())}")
    keep = labels != ignore_index
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}
    split = _split(model)
    if split is None:
        return _logits(model(**inputs))[keep]
    body, head = split
    return head(_hidden(body(**inputs))[keep])


def _hidden(out: Any) -> Tensor:
    hidden = getattr(out, "last_hidden_state", None)
    return hidden if isinstance(hidden, Tensor) else out[0]


def _logits(out: Any) -> Tensor:
    logits = getattr(out, "logits", out)
    if not isinstance(logits, Tensor):
        raise TypeError(f"the model returned {type(out).__name__}, neither a tensor nor an object with `.logits`")
    return logits
