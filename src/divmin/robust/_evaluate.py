"""Clean and PGD accuracy of a classifier, with the energies of natural and adversarial inputs.

Optionally (``kl_terms=True``) also TRADES' KL(p(x) ‖ p(x')) at TRADES' own adversary x'
split into its energy terms (:func:`kl_energy_terms`, Mirza et al. 2024): the marginal
term E(x) - E(x') and the joint term E_{p(y|x)}[E(x', y) - E(x, y)].
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._attacks import _checks, pgd_attack, trades_attack
from ._energy import _num_classes, check_labels, energy, kl_energy_terms

__all__ = ["robustness_metrics"]


def robustness_metrics(model: nn.Module, x: Tensor, labels: Tensor, *, eps: float, steps: int = 20,
                       step_size: float | None = None, norm: str = "linf",
                       bounds: tuple[float, float] | None = (0.0, 1.0), batch_size: int = 512,
                       kl_terms: bool = False, generator: torch.Generator | None = None) -> dict[str, float]:
    """Accuracy on ``x`` and under PGD-``steps`` (cross-entropy, random start), and mean energies.

    Args:
        model: ``(B, ...) -> (B, C)`` logits; evaluated in eval mode (its mode is restored).
        x: ``(N, ...)`` inputs; labels: ``(N,)`` classes. Other arguments as :func:`pgd_attack`.
        kl_terms: also run TRADES' attack (same ball and steps) and report ``kl`` (mean
            KL(p(x) ‖ p(x'))), ``kl_marginal`` and ``kl_joint`` (its energy terms; they sum to ``kl``).

    Returns:
        ``clean_acc``, ``pgd_acc``, ``energy_natural`` (mean E(x)), ``energy_adv`` (mean E(x')) and
        ``energy_gap`` = energy_adv - energy_natural (Mirza et al. 2024 study its sign and size per
        training method: TRADES-like objectives keep natural and adversarial energies close).

    >>> torch.manual_seed(0); net = nn.Linear(2, 2)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> m = robustness_metrics(net, torch.rand(8, 2), torch.arange(8) % 2, eps=0.0, steps=1)
    >>> m["clean_acc"] == m["pgd_acc"], sorted(m)
    (True, ['clean_acc', 'energy_adv', 'energy_gap', 'energy_natural', 'pgd_acc'])
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be an int >= 1, got {batch_size!r}")
    if not isinstance(kl_terms, bool):
        raise TypeError(f"`kl_terms` must be a bool, got {kl_terms!r}")
    _checks(x, eps, step_size, steps, norm, bounds)  # also when no batch reaches the attack
    if x.shape[0] == 0:
        raise ValueError("`x` is empty: accuracies over no example are undefined")
    was = model.training
    model.eval()
    sums = torch.zeros(6, dtype=torch.float64)
    try:
        check_labels(labels, _num_classes(model, x), x.shape[:1])
        for i in range(0, x.shape[0], batch_size):
            xb, yb = x[i:i + batch_size], labels[i:i + batch_size]
            x_adv = pgd_attack(model, xb, yb, eps=eps, steps=steps, step_size=step_size, norm=norm,
                               bounds=bounds, generator=generator)
            with torch.no_grad():
                nat, adv = model(xb).float(), model(x_adv).float()
                sums[:4] += torch.stack([(nat.argmax(1) == yb).sum(), (adv.argmax(1) == yb).sum(),
                                         energy(nat).sum(), energy(adv).sum()]).double().cpu()
            if kl_terms:
                sums[4:] += _kl_sums(model, xb, nat, eps=eps, steps=steps, step_size=step_size, norm=norm,
                                     bounds=bounds, generator=generator)
    finally:
        model.train(was)
    clean, robust, e_nat, e_adv, marginal, joint = (sums / x.shape[0]).tolist()
    out = {"clean_acc": clean, "pgd_acc": robust, "energy_natural": e_nat, "energy_adv": e_adv,
           "energy_gap": e_adv - e_nat}
    if kl_terms:
        out.update(kl=marginal + joint, kl_marginal=marginal, kl_joint=joint)
    return out


def _kl_sums(model: nn.Module, x: Tensor, natural: Tensor, **attack: object) -> Tensor:
    """Batch sums of the two energy terms of KL(p(x) ‖ p(x')) at TRADES' adversary x'."""
    x_adv = trades_attack(model, x, **attack)  # type: ignore[arg-type]
    with torch.no_grad():
        terms = kl_energy_terms(model(x_adv).float(), natural)
    return torch.stack([terms["marginal"].sum(), terms["joint"].sum()]).double().cpu()
