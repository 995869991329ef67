"""Energies of a classifier and WEAT's sample weights.

A classifier with logits f(x) in R^C defines an energy-based model of the inputs
and of the joint (Grathwohl et al. 2020, "Your classifier is secretly an energy
based model", JEM):

    E(x)    = -logsumexp_c f(x)[c]       p(x)    ∝ exp(-E(x))
    E(x, y) = -f(x)[y]                   p(x, y) ∝ exp(-E(x, y))

so that log p(y | x) = E(x) - E(x, y). Mirza et al. 2024 ("Shedding more light
on robust classifiers under the lens of energy-based models", WEAT) weight each
example of TRADES' loss by

    w(x) = 1 / log(1 + exp(|E(x)|))      (natural logits, no gradient),

which down-weights examples of large |energy| (already confidently modelled).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["check_labels", "energy", "joint_energy", "kl_energy_terms", "weat_weights"]


def _check_logits(logits: Tensor, name: str = "logits") -> None:
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        raise TypeError(f"`{name}` must be a floating torch.Tensor, got "
                        f"{getattr(logits, 'dtype', type(logits).__name__)}")
    if logits.dim() < 1 or logits.shape[-1] < 1:
        raise ValueError(f"`{name}` must have shape (..., C) with C >= 1, got {tuple(logits.shape)}")


@contextlib.contextmanager
def _eval_mode(model: Callable[[Tensor], Tensor]) -> Iterator[None]:
    """Put an ``nn.Module`` in eval mode for the block, then restore its mode (other callables: no-op)."""
    was = getattr(model, "training", False)
    if isinstance(model, nn.Module):
        model.eval()
    try:
        yield
    finally:
        if isinstance(model, nn.Module):
            model.train(was)


def _num_classes(model: Callable[[Tensor], Tensor], x: Tensor) -> int:
    """C of ``model``'s ``(B, C)`` logits, from one example in eval mode (no batch-norm update)."""
    with torch.no_grad(), _eval_mode(model):
        return int(model(x[:1]).shape[-1])


def check_labels(labels: Tensor, num_classes: int, shape: torch.Size | tuple[int, ...], name: str = "labels") -> None:
    """Raise unless ``labels`` is an integer tensor of ``shape`` with values in ``[0, num_classes)``.

    >>> check_labels(torch.tensor([0, 3]), 3, (2,))
    Traceback (most recent call last):
    ...
    ValueError: `labels` must lie in [0, 3), got values in [0, 3]
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"`num_classes` must be an int >= 1, got {num_classes!r}")
    if (not isinstance(labels, Tensor) or labels.dtype.is_floating_point or labels.is_complex()
            or labels.dtype == torch.bool):
        raise TypeError(f"`{name}` must be an integer torch.Tensor, got "
                        f"{getattr(labels, 'dtype', type(labels).__name__)}")
    if not isinstance(shape, (tuple, list, torch.Size)) or tuple(labels.shape) != tuple(shape):
        raise ValueError(f"`{name}` must have shape {tuple(shape)}, got {tuple(labels.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"`{name}` must lie in [0, {num_classes}), got values in "
                         f"[{int(labels.min())}, {int(labels.max())}]")


def energy(logits: Tensor) -> Tensor:
    """E(x) = -logsumexp_c f(x)[c]: ``(..., C)`` logits -> ``(...)`` energies (JEM's p(x) ∝ exp(-E(x))).

    >>> energy(torch.zeros(1, 4))  # -log 4
    tensor([-1.3863])
    """
    _check_logits(logits)
    return -torch.logsumexp(logits, dim=-1)


def joint_energy(logits: Tensor, labels: Tensor) -> Tensor:
    """E(x, y) = -f(x)[y]: ``(..., C)`` logits and ``(...)`` integer labels -> ``(...)`` energies.

    ``energy(logits) - joint_energy(logits, y)`` is ``log p(y | x)``.

    >>> joint_energy(torch.tensor([[1.0, 2.0]]), torch.tensor([1]))
    tensor([-2.])
    """
    _check_logits(logits)
    check_labels(labels, logits.shape[-1], logits.shape[:-1])
    return -logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1)


def weat_weights(natural_logits: Tensor, *, normalize: bool = False) -> Tensor:
    """WEAT's weights w(x) = 1 / log(1 + exp(|E(x)|)) = 1 / softplus(|E(x)|), detached.

    Args:
        natural_logits: ``(B, C)`` logits of the clean inputs.
        normalize: divide by the batch mean, so the weights average to one over the batch.

    Returns:
        ``(B,)`` weights, no gradient (in (0, 1/log 2] when not normalised).

    >>> weat_weights(torch.zeros(2, 1))  # E = 0: w = 1 / log 2
    tensor([1.4427, 1.4427])
    >>> round(float(weat_weights(torch.tensor([[0.0], [3.0]]), normalize=True).mean()), 6)
    1.0
    """
    _check_logits(natural_logits, "natural_logits")
    if not isinstance(normalize, bool):
        raise TypeError(f"`normalize` must be a bool, got {normalize!r}")
    w = 1.0 / F.softplus(energy(natural_logits.detach().float()).abs())
    return w / w.mean() if normalize else w


def kl_energy_terms(adv_logits: Tensor, natural_logits: Tensor) -> dict[str, Tensor]:
    """TRADES' KL(p(· | x) ‖ p(· | x')) split into energies (Mirza et al. 2024), per example.

    With log p(y | x) = E(x) - E(x, y):

        KL = [E(x) - E(x')] + sum_y p(y | x) [E(x', y) - E(x, y)]
           =    marginal    +              joint

    Args:
        adv_logits: ``(B, C)`` logits of x' (the model side); natural_logits: ``(B, C)`` of x (the target).

    Returns:
        ``{"marginal": (B,), "joint": (B,)}``; their sum is the KL.

    >>> t = kl_energy_terms(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, 1.0]]))
    >>> float(t["marginal"] + t["joint"])
    0.0
    """
    _check_logits(adv_logits, "adv_logits")
    _check_logits(natural_logits, "natural_logits")
    if adv_logits.shape != natural_logits.shape:
        raise ValueError(f"`adv_logits` {tuple(adv_logits.shape)} and `natural_logits` "
                         f"{tuple(natural_logits.shape)} must have the same shape")
    for name, t in (("adv_logits", adv_logits), ("natural_logits", natural_logits)):
        if bool((torch.isnan(t) | (t == math.inf)).any()) or bool((t == -math.inf).all(-1).any()):
            raise ValueError(f"`{name}` holds NaN, +inf or a row without a finite logit: its softmax is undefined")
    p = natural_logits.softmax(-1)
    gap = natural_logits - adv_logits  # E(x', y) - E(x, y) = f(x)[y] - f(x')[y]
    # a class of probability 0 (logit -inf) adds nothing, whatever its gap (0 * inf would be NaN)
    joint = torch.where(p > 0, p * gap, torch.zeros_like(gap)).sum(-1)
    return {"marginal": energy(natural_logits) - energy(adv_logits), "joint": joint}
