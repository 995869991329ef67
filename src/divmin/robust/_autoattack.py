"""Robust accuracy under AutoAttack (Croce & Hein 2020) through the optional ``torchattacks`` package.

AutoAttack is the standard, parameter-free robustness check: an ensemble of APGD on
cross-entropy, targeted APGD on the difference-of-logits ratio, targeted FAB and the
black-box Square attack; an example counts as robust only if every attack fails.
divmin does not implement it: ``pip install torchattacks`` (it imports without
torchvision, so ``pip install --no-deps torchattacks`` is enough beside a CPU torch).
"""

from __future__ import annotations

import importlib.util
import math

import torch
from torch import Tensor, nn

from ._energy import _eval_mode, _num_classes, check_labels

__all__ = ["autoattack_accuracy", "autoattack_available"]

_NORMS = {"linf": "Linf", "l2": "L2"}  # divmin's norm names -> torchattacks'
_VERSIONS = ("standard", "plus", "rand")


def autoattack_available() -> bool:
    """Whether the optional ``torchattacks`` package can be imported."""
    return importlib.util.find_spec("torchattacks") is not None


class _AsImages(nn.Module):
    """Presents a classifier of ``(B, *shape)`` inputs as one of ``(B, C, H, W)`` images (torchattacks' layout)."""

    def __init__(self, model: nn.Module, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.model, self.shape = model, shape

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x.reshape(x.shape[0], *self.shape))


def _image_shape(shape: tuple[int, ...], image_shape: tuple[int, int, int] | None) -> tuple[int, int, int]:
    if image_shape is not None:
        if len(image_shape) != 3 or math.prod(image_shape) != math.prod(shape):
            raise ValueError(f"`image_shape` must be (C, H, W) with C·H·W = {math.prod(shape)}, got {image_shape!r}")
        return tuple(int(s) for s in image_shape)  # type: ignore[return-value]
    if len(shape) == 3:
        return shape  # type: ignore[return-value]
    side = math.isqrt(math.prod(shape))
    if side * side != math.prod(shape):
        raise ValueError(f"cannot read inputs of shape {shape} as square images: pass `image_shape` (C, H, W)")
    return (1, side, side)


def autoattack_accuracy(model: nn.Module, x: Tensor, labels: Tensor, *, eps: float, norm: str = "linf",
                        version: str = "standard", image_shape: tuple[int, int, int] | None = None,
                        batch_size: int = 512, seed: int = 0) -> float:
    """Share of ``x`` still classified as ``labels`` after AutoAttack in the ``eps``-ball (inputs in [0, 1]).

    Args:
        model: ``(B, ...) -> (B, C)`` logits; attacked in eval mode (its mode is restored).
        x: ``(N, ...)`` inputs in [0, 1] (torchattacks' range); labels: ``(N,)`` classes.
        eps: the ball's radius (>= 0). norm: ``"linf"`` or ``"l2"``.
        version: torchattacks' ``"standard"`` (APGD-CE, APGD-T, FAB-T, Square), ``"plus"`` or ``"rand"``.
        image_shape: ``(C, H, W)`` the attacks see (Square samples image patches); default: ``x``'s
            shape when it is ``(N, C, H, W)``, else one square channel.
        batch_size: examples per attack call. seed: the attacks' seed.

    Returns:
        the robust accuracy in [0, 1].

    Raises:
        ImportError: when torchattacks is not installed (see :func:`autoattack_available`).
    """
    if norm not in _NORMS:
        raise ValueError(f"`norm` must be one of {', '.join(map(repr, _NORMS))}, got {norm!r}")
    if version not in _VERSIONS:
        raise ValueError(f"`version` must be one of {', '.join(map(repr, _VERSIONS))}, got {version!r}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
        raise ValueError(f"`eps` must be a finite number >= 0, got {eps!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be an int >= 1, got {batch_size!r}")
    if not isinstance(x, Tensor) or not x.dtype.is_floating_point or x.dim() < 2:
        raise TypeError("`x` must be a floating torch.Tensor of shape (N, ...)")
    if float(x.min()) < 0 or float(x.max()) > 1:
        raise ValueError("`x` must lie in [0, 1], the input range torchattacks assumes")
    if not autoattack_available():
        raise ImportError("autoattack_accuracy needs the optional package torchattacks "
                          "(pip install --no-deps torchattacks)")
    import torchattacks

    num_classes = _num_classes(model, x)
    check_labels(labels, num_classes, x.shape[:1])
    shape = _image_shape(tuple(x.shape[1:]), image_shape)
    correct = 0
    # torchattacks reseeds torch's global generator: keep the caller's stream untouched
    with _eval_mode(model), torch.random.fork_rng(devices=[]):
        wrapped = _AsImages(model, tuple(x.shape[1:])).eval()  # torchattacks restores the wrapper's mode per call
        attack = torchattacks.AutoAttack(wrapped, norm=_NORMS[norm], eps=float(eps), version=version,
                                         n_classes=num_classes, seed=seed)
        for i in range(0, x.shape[0], batch_size):
            xb, yb = x[i:i + batch_size].reshape(-1, *shape), labels[i:i + batch_size]
            x_adv = attack(xb, yb).detach()
            # torchattacks may leave the projection a rounding error outside the ball: project again
            x_adv = (xb + (x_adv - xb).clamp(-eps, eps)).clamp(0, 1) if norm == "linf" else x_adv
            with torch.no_grad():
                correct += int((wrapped(x_adv).argmax(1) == yb).sum())
    return correct / x.shape[0]
