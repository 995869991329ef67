"""Projected gradient attacks: PGD (Madry et al. 2018) and TRADES' inner maximisation.

PGD maximises a loss L(f(x'), t) over the intersection of a norm ball and the
input range, from a random start, by normalised-gradient ascent and projection:

    x'_0     = x + delta_0,   delta_0 random in the ball (or 0)
    x'_{k+1} = Proj_{B(x, eps) ∩ [lo, hi]}( x'_k + alpha * dir(∇ L(f(x'_k), t)) )

with dir = sign (L∞) or g / ||g||_2 (L2). TRADES (Zhang et al. 2019) finds its
adversarial example the same way, maximising KL(p(x) ‖ p(x')) from a small
Gaussian start x + 0.001 · N(0, I) (its divergence here is any registry member,
in divmin's order: model p(x') first, target p(x) second).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..divergences import categorical_divergence
from ..registry import Registry
from ._energy import _num_classes, check_labels

__all__ = ["ATTACK_STARTS", "NORMS", "pgd_attack", "trades_attack"]


@dataclasses.dataclass(frozen=True)
class _Norm:
    direction: Callable[[Tensor], Tensor]  # gradient -> ascent direction (per example)
    project: Callable[[Tensor, float], Tensor]  # delta -> delta in the eps-ball
    random: Callable[[tuple[int, ...], float, torch.Generator | None], Tensor]  # a start inside the ball


def _flat_norm(t: Tensor) -> Tensor:
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (t.dim() - 1)))


def _rand(shape: tuple[int, ...], gen: torch.Generator | None, normal: bool = False) -> Tensor:
    device = gen.device if gen is not None else "cpu"
    return (torch.randn if normal else torch.rand)(shape, generator=gen, device=device)


def _l2_random(shape: tuple[int, ...], eps: float, gen: torch.Generator | None) -> Tensor:
    d = _rand(shape, gen, normal=True)
    radius = _rand((shape[0],), gen).view(-1, *([1] * (len(shape) - 1))) * eps
    return d / _flat_norm(d) * radius


NORMS: Registry[_Norm] = Registry("norm")
NORMS.add("linf", _Norm(direction=torch.sign, project=lambda d, eps: d.clamp(-eps, eps),
                        random=lambda shape, eps, gen: (2 * _rand(shape, gen) - 1) * eps))
NORMS.add("l2", _Norm(direction=lambda g: g / _flat_norm(g),
                      project=lambda d, eps: d * (eps / _flat_norm(d)).clamp(max=1.0), random=_l2_random))

# pgd_attack's first perturbation delta_0 by name: fn(norm, x, eps, init_std, generator) -> delta_0 like x
ATTACK_STARTS: Registry[Callable[[_Norm, Tensor, float, float, torch.Generator | None], Tensor]] = \
    Registry("attack start")
ATTACK_STARTS.add("uniform", lambda geom, x, eps, std, gen: geom.random(tuple(x.shape), eps, gen).to(x))
ATTACK_STARTS.add("gaussian", lambda geom, x, eps, std, gen:
                  geom.project(std * _rand(tuple(x.shape), gen, normal=True).to(x), eps))
ATTACK_STARTS.add("none", lambda geom, x, eps, std, gen: torch.zeros_like(x))


def _named(registry: Registry, arg: str, name: Any) -> Any:
    """``registry.get(name)``, its ValueError prefixed with the argument's name."""
    try:
        return registry.get(name)
    except ValueError as err:
        raise ValueError(f"`{arg}`: {err}") from None


def _checks(x: Tensor, eps: float, step_size: float | None, steps: int, norm: str,
            bounds: tuple[float, float] | None) -> float:
    if not isinstance(x, Tensor) or not x.dtype.is_floating_point or x.dim() < 1:
        raise TypeError("`x` must be a floating torch.Tensor of shape (B, ...)")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
        raise ValueError(f"`eps` must be a finite number >= 0, got {eps!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"`steps` must be an int >= 1, got {steps!r}")
    _named(NORMS, "norm", norm)
    check_bounds(bounds)
    alpha = 2.5 * eps / steps if step_size is None else step_size
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"`step_size` must be a finite number >= 0, got {step_size!r}")
    return float(alpha)


def check_bounds(bounds: Any) -> None:
    """``bounds`` is None or (lo, hi), two real numbers with lo < hi (the input range)."""
    ok = bounds is None or (isinstance(bounds, (tuple, list)) and len(bounds) == 2
                            and all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
                            and not math.isnan(bounds[0]) and not math.isnan(bounds[1]) and bounds[0] < bounds[1])
    if not ok:
        raise ValueError(f"`bounds` must be (lo, hi) with lo < hi, or None, got {bounds!r}")


def _ce_sum(logits: Tensor, labels: Tensor) -> Tensor:
    return F.cross_entropy(logits.float(), labels, reduction="sum")


def pgd_attack(model: nn.Module | Callable[[Tensor], Tensor], x: Tensor, target: Any, *, eps: float,
               steps: int = 10, step_size: float | None = None, norm: str = "linf",
               loss: Callable[[Tensor, Any], Tensor] | None = None, start: str = "uniform", init_std: float = 1e-3,
               bounds: tuple[float, float] | None = (0.0, 1.0), generator: torch.Generator | None = None) -> Tensor:
    """Adversarial inputs maximising ``loss(model(x'), target)`` within ``||x' - x|| <= eps`` and ``bounds``.

    Args:
        model: maps ``(B, ...)`` inputs to ``(B, C)`` logits; its mode and parameters are untouched
            (gradients are taken with respect to the input only).
        x: ``(B, ...)`` clean inputs.
        target: what ``loss`` compares to (default: ``(B,)`` integer labels for cross-entropy).
        eps: radius of the ball (>= 0; 0 returns ``x`` projected on ``bounds``).
        steps: ascent steps (>= 1). step_size: alpha per step (default 2.5 eps / steps).
        norm: a name in ``NORMS``: ``"linf"`` (sign steps, box projection) or ``"l2"`` (normalised
            steps, ball projection).
        loss: ``loss(logits, target) -> scalar or (B,)`` to maximise (summed over the batch so that
            each example's step is its own); default cross-entropy.
        start: a name in ``ATTACK_STARTS``: ``"uniform"`` (uniform in the L∞ box / in the L2 ball,
            Madry et al.), ``"gaussian"`` (``init_std`` x N(0, I), TRADES) or ``"none"`` (the clean input).
        bounds: the input range ``(lo, hi)``, or None for no range.
        generator: the random start's source (on the generator's device, then moved to ``x``'s).

    Returns:
        ``(B, ...)`` adversarial inputs, detached.

    >>> net = nn.Linear(2, 2); _ = net.requires_grad_(False)
    >>> x = torch.full((3, 2), 0.5); y = torch.tensor([0, 1, 0])
    >>> x_adv = pgd_attack(net, x, y, eps=0.1, steps=3, generator=torch.Generator().manual_seed(0))
    >>> bool((x_adv - x).abs().max() <= 0.1 + 1e-6)
    True
    """
    alpha = _checks(x, eps, step_size, steps, norm, bounds)
    first_delta = _named(ATTACK_STARTS, "start", start)
    if loss is None:
        if not isinstance(target, Tensor):
            raise TypeError("`target` must be a tensor of labels for the default cross-entropy loss")
        check_labels(target, _num_classes(model, x), x.shape[:1], "target")
        loss = _ce_sum
    geom, x = NORMS.get(norm), x.detach()
    x_adv = _clip(x + first_delta(geom, x, float(eps), init_std, generator), bounds)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            value = loss(model(x_adv), target)
            grad, = torch.autograd.grad(value.sum(), x_adv)
        x_adv = x_adv.detach() + alpha * geom.direction(grad)
        x_adv = _clip(x + geom.project(x_adv - x, float(eps)), bounds)
    return x_adv.detach()


def _clip(x: Tensor, bounds: tuple[float, float] | None) -> Tensor:
    return x if bounds is None else x.clamp(bounds[0], bounds[1])


def trades_attack(model: nn.Module | Callable[[Tensor], Tensor], x: Tensor, *, eps: float, steps: int = 10,
                  step_size: float | None = None, norm: str = "linf", divergence: Any = "forward_kl",
                  init_std: float = 1e-3, bounds: tuple[float, float] | None = (0.0, 1.0),
                  generator: torch.Generator | None = None) -> Tensor:
    """TRADES' inner maximisation: x' maximising D(p(x) ‖ p(x')) in the ball, from x + init_std · N(0, I).

    D is any registry member (default forward KL, TRADES' KL(p(x) ‖ p(x'))), computed by
    :func:`divmin.categorical_divergence` with the adversarial logits as the model and the
    (fixed) natural logits as the target. Other arguments as :func:`pgd_attack`.

    Returns:
        ``(B, ...)`` adversarial inputs, detached.

    >>> net = nn.Linear(2, 3); _ = net.requires_grad_(False)
    >>> x = torch.full((4, 2), 0.5)
    >>> x_adv = trades_attack(net, x, eps=0.05, steps=2, generator=torch.Generator().manual_seed(0))
    >>> tuple(x_adv.shape), bool((x_adv - x).abs().max() <= 0.05 + 1e-6)
    ((4, 2), True)
    """
    _checks(x, eps, step_size, steps, norm, bounds)
    with torch.no_grad():
        natural = model(x.detach()).detach()

    def kl(adv_logits: Tensor, target_logits: Tensor) -> Tensor:
        return categorical_divergence(adv_logits, target_logits, divergence=divergence, reduction="sum")

    return pgd_attack(model, x, natural, eps=eps, steps=steps, step_size=step_size, norm=norm, loss=kl,
                      start="gaussian", init_std=init_std, bounds=bounds, generator=generator)
