"""Summed log-probabilities of labelled tokens, with a bounded float32 footprint.

:func:`sequence_logps` reads the aligned labels of :mod:`divmin.lm`'s layout
(``labels[:, t]`` is the token ``logits[:, t]`` predicts, -100 where nothing
counts): f-DPO's sequence log-probabilities, f-DPG's log Q(y | x) and the
recipes' Monte-Carlo KL all come from it. :func:`completion_logps` runs a model
on prompts plus sampled completions and returns their log-probabilities.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ._layout import IGNORE, assemble

__all__ = ["completion_logps", "sequence_logps"]

_FULL = (torch.float32, torch.float64)


def _check(logits: Any, labels: Any, ignore_index: int) -> None:
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        raise TypeError(f"`logits` must be a floating tensor, got {getattr(logits, 'dtype', type(logits).__name__)}")
    if logits.ndim != 3:
        raise ValueError(f"`logits` must have shape (B, T, V), got {tuple(logits.shape)}")
    if not isinstance(labels, Tensor) or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise TypeError(f"`labels` must be an integer tensor, got {getattr(labels, 'dtype', type(labels).__name__)}")
    if tuple(labels.shape) != tuple(logits.shape[:2]):
        raise ValueError(f"`labels` must have shape {tuple(logits.shape[:2])} like `logits`' first two dims, "
                         f"got {tuple(labels.shape)}")
    # Checked on CPU only: on an accelerator it would cost a host sync per call (the
    # device's own indexing error still fires there).
    if labels.device.type != "cpu":
        return
    if bool(((labels != ignore_index) & ((labels < 0) | (labels >= logits.shape[-1]))).any()):
        raise ValueError(f"`labels` must hold token ids in [0, {logits.shape[-1]}) or ignore_index={ignore_index}")


def _token_logps(logits: Tensor, targets: Tensor) -> Tensor:
    """log softmax(logits)[target] per position; (b, t, V), (b, t) -> (b, t) in >= float32.

    Formed as ``logit[target] - logsumexp(logits)``: no (b, t, V) log-softmax is kept.
    """
    dtype = torch.promote_types(logits.dtype, torch.float32)
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1).to(dtype)
    return picked - torch.logsumexp(logits.to(dtype), dim=-1)


def sequence_logps(logits: Tensor, labels: Tensor, *, ignore_index: int = IGNORE) -> Tensor:
    """Per row, the sum of the log-probabilities of the labelled tokens.

    Args:
        logits: (B, T, V) causal-LM outputs.
        labels: (B, T) integer, aligned with ``logits``: ``labels[:, t]`` is the
            token whose probability ``logits[:, t]`` gives (``input_ids[:, t + 1]``
            on response tokens), ``ignore_index`` where nothing counts (prompt,
            padding). This is the layout of :func:`~divmin.lm.assemble`.
        ignore_index: the label of positions that do not count.

    Returns:
        (B,) ``sum_t [labels[:, t] != ignore_index] * log softmax(logits[:, t])[labels[:, t]]``,
        in float32 (float64 for float64 logits); differentiable w.r.t. ``logits``.

    The log-softmax is formed as ``logit[target] - logsumexp(logits)``, never as
    a full (B, T, V) log-probability tensor. Half-precision logits are upcast to
    float32 one row at a time, so the extra float32 memory is one (T, V) slice.

    >>> logits = torch.zeros(1, 3, 4)              # uniform over 4 tokens
    >>> labels = torch.tensor([[-100, 2, 3]])      # two labelled tokens
    >>> round(float(sequence_logps(logits, labels)), 4)  # 2 * log(1/4)
    -2.7726
    """
    _check(logits, labels, ignore_index)
    keep = labels != ignore_index
    targets = torch.where(keep, labels, torch.zeros_like(labels)).long()  # any valid id: masked out below
    if logits.dtype in _FULL or logits.shape[0] == 0:
        per_token = _token_logps(logits, targets)
    else:
        per_token = torch.stack([_token_logps(logits[i : i + 1], targets[i : i + 1])[0]
                                 for i in range(logits.shape[0])])
    return torch.where(keep, per_token, torch.zeros_like(per_token)).sum(-1)


def _model_device(model: nn.Module, fallback: torch.device) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else fallback


def check_model_ids(model: Any, ids: Tensor, name: str, *, new_tokens: int = 0) -> None:
    """Token ids a causal LM can take: >= 0, below its ``config.vocab_size`` and, with ``new_tokens`` to
    come, within its ``config.n_positions`` when it states them (else its own indexing error fires)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    config = getattr(model, "config", None)
    vocab = getattr(config, "vocab_size", None)
    positions = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    if ids.numel() and bool((ids < 0).any() | ((ids >= vocab).any() if isinstance(vocab, int) else False)):
        raise ValueError(f"`{name}` holds token ids outside [0, {vocab}) (the model's vocabulary)")
    if isinstance(positions, int) and ids.shape[-1] + new_tokens > positions:
        raise ValueError(f"`{name}` ({ids.shape[-1]} tokens) plus {new_tokens} new token(s) exceed the model's "
                         f"{positions} positions")


def _logits(out: Any) -> Tensor:
    logits = getattr(out, "logits", out)
    if not isinstance(logits, Tensor):
        raise TypeError(f"the model returned {type(out).__name__}, neither a tensor nor an object with `.logits`")
    return logits


def completion_logps(model: nn.Module, prompt_ids: Tensor, completions: tuple[Tensor, Tensor], *,
                     prompt_mask: Tensor | None = None) -> Tensor:
    """(B,) summed log-probabilities of each completion given its prompt, under ``model`` (differentiable).

    Args:
        model: a causal LM called as ``model(input_ids=, attention_mask=, position_ids=)``
            returning logits (B, T, V) or an object with ``.logits``.
        prompt_ids: (B, Lp) left-padded prompts, or (Lp,) one prompt shared by every row.
        completions: ``(tokens, mask)``, e.g. :class:`~divmin.lm.Completions`:
            (B, Lc) token ids and (B, Lc) mask of the tokens that count (through
            the first EOS).
        prompt_mask: (B, Lp) 1 on real prompt tokens; None: no padding.

    Every counted completion token contributes ``log p(token | prompt, earlier
    tokens)``; the result lies on the model's device.

    >>> from divmin.lm import tiny_gpt2
    >>> model = tiny_gpt2(6, n_layer=1, n_embd=8)
    >>> tokens, mask = torch.tensor([[3, 1], [4, 0]]), torch.tensor([[True, True], [True, False]])
    >>> completion_logps(model, torch.tensor([2, 5]), (tokens, mask)).shape
    torch.Size([2])
    """
    if not (isinstance(completions, tuple) and len(completions) == 2):
        raise TypeError(f"`completions` must be a (tokens, mask) pair, got {type(completions).__name__}")
    tokens, mask = completions
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(tokens, Tensor):
        raise TypeError(f"`completions` must hold a tensor of token ids, got {type(tokens).__name__}")
    device = _model_device(model, tokens.device)
    tokens, mask = tokens.to(device), mask.to(device)
    if not isinstance(prompt_ids, Tensor) or prompt_ids.dim() not in (1, 2):
        raise ValueError("`prompt_ids` must be a (B, Lp) or (Lp,) tensor of token ids")
    prompt_ids = prompt_ids.to(device)
    if prompt_ids.dim() == 1:
        prompt_ids = prompt_ids.expand(tokens.shape[0], -1)
    prompt_mask = torch.ones_like(prompt_ids) if prompt_mask is None else prompt_mask.to(device)
    batch = assemble(prompt_ids, prompt_mask, tokens, mask)
    check_model_ids(model, batch["input_ids"], "prompt_ids` + `completions")
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                position_ids=batch["position_ids"])
    return sequence_logps(_logits(out), batch["labels"])
