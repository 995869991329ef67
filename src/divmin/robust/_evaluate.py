"""Clean and PGD accuracy of a classifier, with the energies of natural and adversarial inputs."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._attacks import pgd_attack
from ._energy import _num_classes, check_labels, energy

__all__ = ["robustness_metrics"]


def robustness_metrics(model: nn.Module, x: Tensor, labels: Tensor, *, eps: float, steps: int = 20,
                       step_size: float | None = None, norm: str = "linf",
                       bounds: tuple[float, float] | None = (0.0, 1.0), batch_size: int = 512,
                       generator: torch.Generator | None = None) -> dict[str, float]:
    """Accuracy on ``x`` and under PGD-``steps`` (cross-entropy, random start), and mean energies.

    Args:
        model: ``(B, ...) -> (B, C)`` logits; evaluated in eval mode (its mode is restored).
        x: ``(N, ...)`` inputs; labels: ``(N,)`` classes. Other arguments as :func:`pgd_attack`.

    Returns:
        ``clean_acc``, ``pgd_acc``, ``energy_natural`` (mean E(x)), ``energy_adv`` (mean E(x')) and
        ``energy_gap`` = energy_adv - energy_natural (the paper's observation: attacks move
        inputs to higher energy for standard training, much less for robust training).

    >>> torch.manual_seed(0); net = nn.Linear(2, 2)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> m = robustness_metrics(net, torch.rand(8, 2), torch.arange(8) % 2, eps=0.0, steps=1)
    >>> m["clean_acc"] == m["pgd_acc"], sorted(m)
    (True, ['clean_acc', 'energy_adv', 'energy_gap', 'energy_natural', 'pgd_acc'])
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be an int >= 1, got {batch_size!r}")
    was = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64)
    try:
        check_labels(labels, _num_classes(model, x), x.shape[:1])
        for i in range(0, x.shape[0], batch_size):
            xb, yb = x[i:i + batch_size], labels[i:i + batch_size]
            x_adv = pgd_attack(model, xb, yb, eps=eps, steps=steps, step_size=step_size, norm=norm,
                               bounds=bounds, generator=generator)
            with torch.no_grad():
                nat, adv = model(xb).float(), model(x_adv).float()
                sums += torch.stack([(nat.argmax(1) == yb).sum(), (adv.argmax(1) == yb).sum(),
                                     energy(nat).sum(), energy(adv).sum()]).double().cpu()
    finally:
        model.train(was)
    clean, robust, e_nat, e_adv = (sums / x.shape[0]).tolist()
    return {"clean_acc": clean, "pgd_acc": robust, "energy_natural": e_nat, "energy_adv": e_adv,
            "energy_gap": e_adv - e_nat}
