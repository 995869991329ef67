"""Training objectives of robust classification, as a registry.

With natural logits f(x), adversarial logits f(x') and CE the cross-entropy:

    standard   CE(f(x), y)                                     (no attack)
    pgd-at     CE(f(x'_PGD), y)                                Madry et al. 2018
    trades     CE(f(x), y) + beta · mean D(p(x) ‖ p(x'))       Zhang et al. 2019
    weat       mean(w · CE(f(x), y)) + beta · mean(w · D(p(x) ‖ p(x')))   Mirza et al. 2024 (WEAT_nat)

with x'_PGD from :func:`pgd_attack` on CE, x' of TRADES and WEAT from
:func:`trades_attack`, D any registry member (KL by default) through
:func:`divmin.categorical_divergence` (adversarial logits as the model, natural
ones as the target), and w = :func:`weat_weights` (detached; as the paper and its code, raw
weights, or with ``weat_normalize`` divided by their batch mean, which only rescales each batch's loss).
The attacks run with the model in eval mode (its mode is restored after).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..divergences import Divergence, categorical_divergence
from ..engine import Bool, Instance, Int, IsDivergence, Number, OneOf, Tuple, validate
from ..registry import Registry
from ._attacks import NORMS, _named, pgd_attack, trades_attack
from ._energy import _eval_mode, _num_classes, check_labels, energy, kl_energy_terms, weat_weights

__all__ = ["OBJECTIVES", "AttackSettings", "available_objectives", "register_objective", "robust_loss"]


@dataclasses.dataclass(frozen=True)
class AttackSettings:
    """The inner maximisation and the regulariser of an objective (see :func:`pgd_attack`); checked on construction.

    >>> AttackSettings(beta=-1.0)
    Traceback (most recent call last):
    ...
    ValueError: `beta` must be a finite number >= 0, got -1.0
    """

    eps: float = 8 / 255  # radius of the threat ball
    steps: int = 10  # attack steps
    step_size: float | None = None  # per-step alpha (default 2.5 eps / steps)
    norm: str = "linf"  # "linf" or "l2"
    beta: float = 6.0  # weight of the divergence term (TRADES, WEAT)
    divergence: str | Divergence = "forward_kl"  # D(p(x) || p(x')) of TRADES and WEAT: any f member
    bounds: tuple[float, float] | None = (0.0, 1.0)  # input range
    generator: torch.Generator | None = None  # the attacks' random starts
    weat_normalize: bool = False  # WEAT: divide the weights by their batch mean (the paper: raw weights)

    CHECKS = dict(  # one per field: divmin.engine.validate
        eps=Number(ge=0), steps=Int(ge=1), step_size=Number(ge=0, optional=True), norm=OneOf(NORMS),
        beta=Number(ge=0), divergence=IsDivergence(), bounds=Tuple((Number(), Number()), optional=True),
        generator=Instance(torch.Generator, optional=True), weat_normalize=Bool(),
    )

    def __post_init__(self) -> None:
        validate(self)
        if self.bounds is not None and not self.bounds[0] < self.bounds[1]:
            raise ValueError(f"`bounds` must be (lo, hi) with lo < hi, got {self.bounds!r}")

    def attack_kw(self) -> dict[str, Any]:
        return dict(eps=self.eps, steps=self.steps, step_size=self.step_size, norm=self.norm,
                    bounds=self.bounds, generator=self.generator)


Objective = Callable[[nn.Module, Tensor, Tensor, AttackSettings], dict[str, Tensor]]
OBJECTIVES: Registry[Objective] = Registry("objective")


def register_objective(name: str) -> Callable[[Objective], Objective]:
    """Decorator adding ``fn(model, x, labels, settings) -> {"loss": ..., metrics...}`` as ``name``."""
    if not isinstance(name, str) or not name.strip():
        raise TypeError(f"`name` must be a non-empty string, got {name!r}")

    def add(fn: Objective) -> Objective:
        if not callable(fn):
            raise TypeError(f"`fn` must be callable (model, x, labels, settings) -> dict, got {type(fn).__name__}")
        if name in OBJECTIVES:
            raise ValueError(f"`name`: objective {name!r} is already registered")
        return OBJECTIVES.register(name)(fn)
    return add


def available_objectives() -> list[str]:
    """Names of the registered objectives, sorted.

    >>> available_objectives()
    ['pgd-at', 'standard', 'trades', 'weat']
    """
    return OBJECTIVES.names()


def _energies(natural: Tensor, adv: Tensor | None) -> dict[str, Tensor]:
    """Batch means of E(x), and of E(x') and KL(p(x) ‖ p(x'))'s two energy terms when attacked."""
    natural = natural.detach().float()
    out = {"energy_natural": energy(natural).mean()}
    if adv is not None:
        adv = adv.detach().float()
        terms = kl_energy_terms(adv, natural)
        out.update(energy_adv=energy(adv).mean(), kl_marginal=terms["marginal"].mean(),
                   kl_joint=terms["joint"].mean())
    return out


@register_objective("standard")
def _standard(model: nn.Module, x: Tensor, y: Tensor, s: AttackSettings) -> dict[str, Tensor]:
    logits = model(x)
    return {"loss": F.cross_entropy(logits.float(), y), **_energies(logits, None)}


@register_objective("pgd-at")
def _pgd_at(model: nn.Module, x: Tensor, y: Tensor, s: AttackSettings) -> dict[str, Tensor]:
    with _eval_mode(model):
        x_adv = pgd_attack(model, x, y, **s.attack_kw())
        natural = model(x).detach()
    adv = model(x_adv)
    return {"loss": F.cross_entropy(adv.float(), y), **_energies(natural, adv)}


def _trades_parts(model: nn.Module, x: Tensor, y: Tensor, s: AttackSettings) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(natural logits, adversarial logits, per-example CE, per-example D(p(x) ‖ p(x')))."""
    with _eval_mode(model):
        x_adv = trades_attack(model, x, divergence=s.divergence, **s.attack_kw())
    natural, adv = model(x), model(x_adv)
    ce = F.cross_entropy(natural.float(), y, reduction="none")
    reg = categorical_divergence(model_logits=adv, target_logits=natural, divergence=s.divergence,
                                 reduction="none")
    return natural, adv, ce, reg


@register_objective("trades")
def _trades(model: nn.Module, x: Tensor, y: Tensor, s: AttackSettings) -> dict[str, Tensor]:
    natural, adv, ce, reg = _trades_parts(model, x, y, s)
    return {"loss": ce.mean() + s.beta * reg.mean(), "ce": ce.detach().mean(), "reg": reg.detach().mean(),
            **_energies(natural, adv)}


@register_objective("weat")
def _weat(model: nn.Module, x: Tensor, y: Tensor, s: AttackSettings) -> dict[str, Tensor]:
    natural, adv, ce, reg = _trades_parts(model, x, y, s)
    w = weat_weights(natural, normalize=s.weat_normalize)
    return {"loss": (w * ce).mean() + s.beta * (w * reg).mean(), "ce": ce.detach().mean(),
            "reg": reg.detach().mean(), **_energies(natural, adv)}


def robust_loss(model: nn.Module, x: Tensor, labels: Tensor, *, objective: str = "trades",
                settings: AttackSettings | None = None) -> dict[str, Tensor]:
    """One batch's training loss under ``objective`` (a name in :data:`OBJECTIVES`).

    Args:
        model: ``(B, ...) -> (B, C)`` logits. x: ``(B, ...)`` inputs in ``settings.bounds``.
        labels: ``(B,)`` integer classes in ``[0, C)``.
        settings: an :class:`AttackSettings` (default: eps 8/255, 10 L∞ steps, beta 6, KL).

    Returns:
        ``{"loss": scalar to minimise, "energy_natural": mean E(x), ...}`` plus ``energy_adv`` and
        ``kl_marginal``/``kl_joint`` (attacked objectives: the means of :func:`kl_energy_terms` of
        KL(p(x) ‖ p(x')), whatever the divergence trained) and ``ce``/``reg`` (TRADES, WEAT);
        all but ``loss`` detached.

    >>> torch.manual_seed(0); net = nn.Linear(2, 2)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> out = robust_loss(net, torch.rand(4, 2), torch.tensor([0, 1, 1, 0]), objective="weat")
    >>> sorted(out)
    ['ce', 'energy_adv', 'energy_natural', 'kl_joint', 'kl_marginal', 'loss', 'reg']
    >>> robust_loss(net, torch.rand(4, 2), torch.tensor([0, 1, 1, 0]), objective="fgsm")
    Traceback (most recent call last):
    ...
    ValueError: `objective`: unknown objective 'fgsm'; available: pgd-at, standard, trades, weat
    """
    loss_fn = _named(OBJECTIVES, "objective", objective)
    settings = AttackSettings() if settings is None else settings
    if not isinstance(settings, AttackSettings):
        raise TypeError(f"`settings` must be an AttackSettings, got {type(settings).__name__}")
    if not isinstance(x, Tensor) or not x.dtype.is_floating_point or x.dim() < 1:
        raise TypeError("`x` must be a floating torch.Tensor of shape (B, ...)")
    check_labels(labels, _num_classes(model, x), x.shape[:1])
    return loss_fn(model, x, labels, settings)
