"""Token-level knowledge distillation with any registry divergence.

For teacher logits ``a`` and student logits ``b`` at N positions (tokens or
examples), with P_i = softmax(a_i / T) the teacher and Q_i = softmax(b_i / T)
the student (DESIGN.md: P target, Q model),

    loss = (1 / n) * sum_{i counted} D_f(P_i || Q_i),   D_f(P || Q) = sum_x Q(x) f(P(x) / Q(x)),

where a position counts unless its label is ``ignore_index`` and n is
``num_items`` (the global number of counted positions, the way Hugging Face
passes ``num_items_in_batch``: the loss is then exact under gradient
accumulation and data parallelism) or the local count. The per-row closed form
and its analytic gradient, computed chunk by chunk on the counted positions only,
are :func:`divmin.categorical_divergence`'s.

Vocabulary mismatch (teacher V_t != student V_s, e.g. embedding matrices padded
to different multiples): ``vocab_policy="truncate"`` (default) compares the two
on the shared ids ``[0, min(V_t, V_s))``, each renormalised there, i.e. both
distributions are conditioned on the shared vocabulary and the extra ids get
neither loss nor gradient. ``"pad"`` extends the smaller side with ``-inf``
logits (zero probability): mass one side puts where the other has none then
counts in full, so the loss is infinite for members that must be (forward KL
when the teacher has mass the student cannot represent; reverse KL, Neyman and
Jeffreys when the student has mass the teacher lacks).

Sparse teachers (:class:`TopKTeacher`, e.g. top-k log-probabilities stored
offline) are compared on k + 1 outcomes: the k listed ids and one "tail" bucket
holding everything else. ``tail="bucket"`` gives the teacher's bucket its
remaining mass ``1 - sum_k p``; ``tail="renormalize"`` renormalises the teacher
over its k ids (bucket mass 0, so mode-seeking members are infinite unless the
student's tail mass is 0 too). In both modes the student's bucket holds its own
mass outside the k ids, so the renormalised mode equals the dense loss against a
teacher with ``-inf`` logits off its top k, and the bucketed mode is the
divergence between the two coarsened distributions (never above the full one,
by the data-processing inequality). Both equal the full-teacher loss at k = V.
Memory is O(N k) for the teacher; the student's logits are used as given.

References: G. Hinton, O. Vinyals, J. Dean, Distilling the Knowledge in a Neural
Network (2015); R. Agarwal et al., On-Policy Distillation of Language Models
(GKD, 2024); J. Ko et al., DistiLLM (2024).
"""

from __future__ import annotations

import inspect
import math
import numbers
from typing import Any, Callable, NamedTuple

import torch
from torch import Tensor

from ..divergences import Divergence, as_divergence, categorical_divergence
from ..divergences.kernels import check_float_tensor, check_index_tensor

__all__ = ["TopKTeacher", "token_kd_loss", "align_vocab", "label_mask", "normalise_sum"]

VOCAB_POLICIES = ("truncate", "pad")
_TAILS = ("bucket", "renormalize")


class TopKTeacher(NamedTuple):
    """A sparse teacher: its k most likely ids per position and their log-probabilities.

    ``log_probs`` are the teacher's log-probabilities *at the distillation
    temperature*, ``log_softmax(teacher_logits / T)`` restricted to ``indices``
    (``token_kd_loss``'s ``temperature`` then divides only the student's logits);
    ``-inf`` entries are allowed (fewer than k candidates). ``indices`` must be
    distinct within a row.
    """

    log_probs: Tensor  # (..., k) float teacher log-probabilities at temperature T
    indices: Tensor  # (..., k) int64 vocabulary ids in [0, V_student)
    tail: str = "bucket"  # "bucket": teacher keeps 1 - sum(p) off its top k; "renormalize": 0 there


def align_vocab(teacher_logits: Tensor, student_logits: Tensor, policy: str) -> tuple[Tensor, Tensor]:
    """Bring ``(..., V_t)`` and ``(..., V_s)`` logits to one vocabulary (module docstring for the policies)."""
    if policy not in VOCAB_POLICIES:
        raise ValueError(f"`vocab_policy` must be one of {VOCAB_POLICIES}, got {policy!r}")
    vt, vs = teacher_logits.shape[-1], student_logits.shape[-1]
    if vt == vs:
        return teacher_logits, student_logits
    if policy == "truncate":
        v = min(vt, vs)
        return teacher_logits[..., :v], student_logits[..., :v]
    pad = lambda x, v: torch.nn.functional.pad(x, (0, v - x.shape[-1]), value=-math.inf)  # noqa: E731
    return (pad(teacher_logits, vs), student_logits) if vt < vs else (teacher_logits, pad(student_logits, vt))


def label_mask(labels: Tensor | None, ignore_index: int, lead: torch.Size, device: torch.device) -> Tensor | None:
    """``(lead)`` bool mask of counted positions (``labels != ignore_index``), or None when no labels."""
    if labels is None:
        return None
    check_index_tensor("labels", labels, lead)
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"`ignore_index` must be an int, got {ignore_index!r}")
    return (labels != ignore_index).to(device)


def normalise_sum(total: Tensor, mask: Tensor | None, n_rows: int, num_items: Any) -> Tensor:
    """``total / num_items`` if given, else ``total`` over the local count of counted rows (0 if none)."""
    if num_items is None:
        count = mask.sum() if mask is not None else torch.tensor(n_rows, device=total.device)
        return total / count.clamp(min=1).to(total.dtype)
    if isinstance(num_items, Tensor):
        if num_items.numel() != 1 or not bool(num_items > 0):
            raise ValueError(f"`num_items` must be a positive scalar, got {num_items}")
        return total / num_items.to(device=total.device, dtype=total.dtype)
    if isinstance(num_items, bool) or not isinstance(num_items, numbers.Real) or not num_items > 0:
        raise ValueError(f"`num_items` must be a positive number, tensor or None, got {num_items!r}")
    return total / num_items


def check_temperature(temperature: Any) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) \
            or not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"`temperature` must be a finite number > 0, got {temperature!r}")
    return float(temperature)


def _log1mexp(x: Tensor) -> Tensor:
    """``log(1 - exp(x))`` for x <= 0, ``-inf`` at x >= 0, with a finite gradient everywhere."""
    inside = x < 0
    xs = torch.where(inside, x, torch.full_like(x, -1.0))  # keeps the unused branch's gradient finite
    val = torch.where(xs > -math.log(2.0), torch.log(-torch.expm1(xs)), torch.log1p(-torch.exp(xs)))
    return torch.where(inside, val, torch.full_like(x, -math.inf))


def _topk_pair(student_logits: Tensor, teacher: TopKTeacher, temperature: float) -> tuple[Tensor, Tensor]:
    """``(..., k + 1)`` teacher and student log-probabilities on the top-k ids plus the tail bucket."""
    lp, idx = teacher.log_probs, teacher.indices
    check_float_tensor("teacher_logits.log_probs", lp, nonempty_last=True)
    if not isinstance(idx, Tensor) or idx.dtype not in (torch.int64, torch.int32):
        raise TypeError("`teacher_logits.indices` must be an int64 (or int32) tensor")
    if teacher.tail not in _TAILS:
        raise ValueError(f"`teacher_logits.tail` must be one of {_TAILS}, got {teacher.tail!r}")
    if lp.shape != idx.shape or lp.shape[:-1] != student_logits.shape[:-1]:
        raise ValueError(f"`teacher_logits` log_probs {tuple(lp.shape)} and indices {tuple(idx.shape)} must agree "
                         f"and match the student's leading shape {tuple(student_logits.shape[:-1])}")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= student_logits.shape[-1]):
        raise ValueError(f"`teacher_logits.indices` must lie in [0, {student_logits.shape[-1]})")
    if idx.shape[-1] > 1:
        ordered = idx.sort(dim=-1).values
        repeats = (ordered[..., 1:] == ordered[..., :-1]).any(-1)
        if bool(repeats.any()):
            raise ValueError(f"`teacher_logits.indices` repeat an id within {int(repeats.sum())} row(s): the "
                             "student's mass on it would count twice; ids must be distinct per row (pad short rows "
                             "with unused ids and log_probs -inf)")
    dtype = torch.promote_types(torch.promote_types(lp.dtype, student_logits.dtype), torch.float32)
    s = student_logits.to(dtype) / temperature
    s_k = torch.gather(s, -1, idx.long()) - torch.logsumexp(s, dim=-1, keepdim=True)
    s_tail = _log1mexp(torch.logsumexp(s_k, dim=-1, keepdim=True))
    t_k = lp.detach().to(dtype)
    t_lse = torch.logsumexp(t_k, dim=-1, keepdim=True)
    if teacher.tail == "renormalize":
        t_k, t_tail = t_k - t_lse, torch.full_like(t_lse, -math.inf)
    else:
        if bool((t_lse > 1e-3).any()):
            raise ValueError("`teacher_logits.log_probs` hold more than probability 1 in some row (tail='bucket')")
        t_tail = _log1mexp(t_lse)
    if idx.shape[-1] >= student_logits.shape[-1]:
        # k = V (distinct ids): both tails are exactly empty, so the pair is the dense one, permuted: the
        # student's logits as they are (the closed form normalises them; no log-sum-exp rounded in here)
        return t_k, torch.gather(s, -1, idx.long())
    return torch.cat([t_k, t_tail], dim=-1), torch.cat([s_k, s_tail], dim=-1)


def token_kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor | TopKTeacher,
    *,
    divergence: str | Divergence = "forward_kl",
    labels: Tensor | None = None,
    ignore_index: int = -100,
    temperature: float = 1.0,
    num_items: int | float | Tensor | None = None,
    vocab_policy: str = "truncate",
    chunk_size: int | None = None,
    backend: str = "auto",
) -> Tensor:
    """Mean over counted positions of ``D(teacher || student)`` between temperature softmaxes.

    Args:
        student_logits: ``(..., V_s)`` student logits (the model Q; gradients flow here).
        teacher_logits: ``(..., V_t)`` teacher logits (the target P; treated as a constant),
            or a :class:`TopKTeacher` with ``(..., k)`` log-probabilities and ids.
        divergence: a registry name or :class:`~divmin.Divergence`.
        labels: ``(...)`` integer labels aligned with the logits (already shifted for
            causal LMs); positions equal to ``ignore_index`` do not count. None: all count.
        ignore_index: the label value of positions to skip.
        temperature: T > 0 dividing both logits (no ``T^2`` factor; callers add it).
        num_items: divide the summed loss by this (global counted positions) instead of
            the local count; the local count of 0 gives a loss of 0.
        vocab_policy: ``"truncate"`` or ``"pad"`` when V_t != V_s (module docstring).
        chunk_size: rows per chunk of the closed form (memory O(chunk_size x V) besides the
            gradient); None: cache-sized chunks (:func:`~divmin.categorical_divergence`).
        backend: :func:`~divmin.categorical_divergence`'s (``"auto"``: the Triton kernel for
            CUDA float32/16/bf16 logits when Triton is installed).

    Returns:
        A scalar in float32 (float64 for float64 inputs).
    """
    check_float_tensor("student_logits", student_logits, nonempty_last=True)
    div = as_divergence(divergence)
    temperature = check_temperature(temperature)
    lead = student_logits.shape[:-1]
    mask = label_mask(labels, ignore_index, lead, student_logits.device)
    if isinstance(teacher_logits, TopKTeacher):
        t, s = _topk_pair(student_logits, teacher_logits, temperature)
        temp = 1.0
    else:
        check_float_tensor("teacher_logits", teacher_logits, nonempty_last=True)
        if teacher_logits.shape[:-1] != lead:
            raise ValueError(f"`teacher_logits` leading shape {tuple(teacher_logits.shape[:-1])} differs from "
                             f"`student_logits`' {tuple(lead)}")
        t, s = align_vocab(teacher_logits.detach(), student_logits, vocab_policy)
        temp = temperature
    rows = categorical_divergence(s, t, divergence=div, mask=mask, temperature=temp, reduction="none", chunk_size=chunk_size,
                                  backend=backend)
    return normalise_sum(rows.sum(), mask, rows.numel(), num_items)


# token_kd_loss's keywords and defaults: the one definition every KD loss of (N, V) scores shares
_KD_KEYWORDS = {name: p for name, p in inspect.signature(token_kd_loss).parameters.items()
                if p.kind is p.KEYWORD_ONLY}


def kd_keywords(options: dict[str, Any], where: str) -> dict[str, Any]:
    """``options`` completed with :func:`token_kd_loss`'s keyword defaults; an unknown one is a TypeError."""
    unknown = sorted(set(options) - set(_KD_KEYWORDS))
    if unknown:
        raise TypeError(f"{where}() got unexpected keyword argument(s) {unknown}; it takes {list(_KD_KEYWORDS)}")
    return {name: options.get(name, p.default) for name, p in _KD_KEYWORDS.items()}


def kd_signature(fn: Callable[..., Any]) -> inspect.Signature:
    """``fn``'s signature with its ``**options`` spelled out as :func:`token_kd_loss`'s keywords (for help())."""
    sig = inspect.signature(fn)
    head = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
    return sig.replace(parameters=head + list(_KD_KEYWORDS.values()))
