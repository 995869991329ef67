r"""Entropic optimal transport: log-domain, batched Sinkhorn and the Sinkhorn divergence.

For weights ``a`` (n,), ``b`` (m,) on the simplex and a cost matrix ``C`` (n, m),
the entropic OT value is

.. math::

    \mathrm{OT}_\varepsilon(a, b, C) = \min_{P \in \Pi(a, b)} \langle P, C \rangle
        + \varepsilon\, \mathrm{KL}(P \,\|\, a \otimes b)
      = \max_{f, g}\ \langle f, a \rangle + \langle g, b \rangle
        - \varepsilon \langle e^{(f \oplus g - C)/\varepsilon} - 1, a \otimes b \rangle,

with the optimal plan ``P = exp((f ⊕ g - C)/eps) * (a ⊗ b)``. Sinkhorn's algorithm
(Cuturi, 2013) alternates the two closed-form maximizations of the dual, which in the
log domain read

.. math::

    f_i = -\varepsilon \log \sum_j b_j\, e^{(g_j - C_{ij})/\varepsilon}, \qquad
    g_j = -\varepsilon \log \sum_i a_i\, e^{(f_i - C_{ij})/\varepsilon}.

Working with the potentials (never with ``exp(-C/eps)``) is what keeps small
``epsilon`` finite. Epsilon-scaling (annealing from ``max|C|`` down to ``epsilon``)
and the debiased divergence ``S = OT(a,b) - OT(a,a)/2 - OT(b,b)/2`` follow
Feydy et al. (2019).

References
----------
* M. Cuturi. Sinkhorn Distances: Lightspeed Computation of Optimal Transport. NeurIPS 2013.
* J. Feydy, T. Séjourné, F.-X. Vialard, S. Amari, A. Trouvé, G. Peyré. Interpolating
  between Optimal Transport and MMD using Sinkhorn Divergences. AISTATS 2019.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, NamedTuple

import torch
from torch import Tensor

__all__ = [
    "SinkhornConvergenceWarning",
    "SinkhornResult",
    "available_costs",
    "sinkhorn",
    "sinkhorn_divergence",
]

_GRADIENTS = ("envelope", "autodiff")


class SinkhornConvergenceWarning(RuntimeWarning):
    """Sinkhorn stopped at ``max_iter`` before the marginal error fell below ``tol``."""


class SinkhornResult(NamedTuple):
    """What :func:`sinkhorn` returns (leading batch dim ``B`` absent for unbatched inputs).

    Attributes:
        cost: (B,) linear transport cost ``<P, C>`` (what POT's ``ot.sinkhorn2`` returns).
        objective: (B,) entropic OT value ``<P, C> + eps KL(P || a⊗b)``, computed as the
            dual value. Its envelope gradients are exact: ``d/dC = P``, ``d/da = f``,
            ``d/db = g`` (up to an additive constant on the simplex).
        f: (B, n) dual potential on the ``a`` side.
        g: (B, m) dual potential on the ``b`` side.
        plan: (B, n, m) transport plan ``P``.
        n_iter: number of Sinkhorn iterations run (epsilon-scaling steps included).
        converged: (B,) bool, L1 row-marginal error below ``tol``.
    """

    cost: Tensor
    objective: Tensor
    f: Tensor
    g: Tensor
    plan: Tensor
    n_iter: int
    converged: Tensor


# --- validation ---------------------------------------------------------------------------


def _check_float(name: str, t: Tensor) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"`{name}` must have a floating dtype, got {t.dtype}")


def _check_weights(name: str, w: Tensor, ndim: int, size: int, batch: int | None) -> None:
    if w.ndim != ndim:
        raise ValueError(f"`{name}` must have {ndim} dim(s) to match `cost`, got shape {tuple(w.shape)}")
    if w.shape[-1] != size or (batch is not None and w.shape[0] != batch):
        raise ValueError(f"`{name}` has shape {tuple(w.shape)}, incompatible with `cost`")
    # Loose in low precision: bf16 cannot even represent 1 - 1/256 exactly.
    tol = max(math.sqrt(torch.finfo(w.dtype).eps), 1e-6)
    if bool((w < 0).any()):
        raise ValueError(f"`{name}` must be nonnegative")
    if not bool(((w.sum(-1, dtype=torch.float64) - 1).abs() <= tol).all()):
        raise ValueError(f"`{name}` must sum to 1 along its last dim (tolerance {tol:.1e})")


def _validate(a, b, cost, epsilon, scaling, gradient, max_iter, check_every) -> None:
    for name, t in (("a", a), ("b", b), ("cost", cost)):
        _check_float(name, t)
    if cost.ndim not in (2, 3):
        raise ValueError(f"`cost` must have shape (n, m) or (B, n, m), got {tuple(cost.shape)}")
    batch = cost.shape[0] if cost.ndim == 3 else None
    _check_weights("a", a, cost.ndim - 1, cost.shape[-2], batch)
    _check_weights("b", b, cost.ndim - 1, cost.shape[-1], batch)
    if not (isinstance(epsilon, (int, float)) and epsilon > 0 and math.isfinite(epsilon)):
        raise ValueError(f"`epsilon` must be a finite float > 0, got {epsilon!r}")
    if scaling is not None and not 0 < scaling <= 1:
        raise ValueError(f"`scaling` must be in (0, 1] or None, got {scaling!r}")
    if gradient not in _GRADIENTS:
        raise ValueError(f"`gradient` must be one of {_GRADIENTS}, got {gradient!r}")
    if max_iter < 1 or check_every < 1:
        raise ValueError(f"`max_iter` and `check_every` must be >= 1, got {max_iter}, {check_every}")


# --- the iterations -----------------------------------------------------------------------


def _safe_log(w: Tensor) -> Tensor:
    # torch.log at 0 has an infinite derivative that meets a zero softmax weight in
    # autodiff (inf * 0 = NaN); routing zeros through a constant branch avoids it.
    pos = w > 0
    return torch.where(pos, w, torch.ones_like(w)).log().masked_fill(~pos, -math.inf)


def _c_transform(pot: Tensor, log_w: Tensor, cost: Tensor, eps: Tensor) -> Tensor:
    """``-eps * LSE_j(log w_j + (pot_j - cost_ij)/eps)``; pot, log_w (B, m), cost (B, n, m)."""
    z = log_w.unsqueeze(-2) + (pot.unsqueeze(-2) - cost) / eps.unsqueeze(-1)
    return -eps * torch.logsumexp(z, dim=-1)


def _marginal_error(f, g, log_a, log_b, cost, eps) -> Tensor:
    """L1 error of the plan's row marginal vs ``a``, (B,).

    The row sums are ``a_i exp((f_i - T(g)_i)/eps)`` with T the f-update, so one
    c-transform gives them; adding ``log a`` before ``exp`` keeps zero weights at 0.
    """
    row = torch.exp(log_a + (f - _c_transform(g, log_b, cost, eps)) / eps)
    return (row - log_a.exp()).abs().sum(-1)


def _eps_schedule(cost: Tensor, epsilon: float, scaling: float | None) -> tuple[Tensor, int]:
    """Per-batch starting eps (B, 1) and the number of annealing steps to reach ``epsilon``."""
    if scaling is None or scaling == 1:
        return cost.new_full((cost.shape[0], 1), epsilon), 0
    eps0 = cost.detach().abs().amax(dim=(-2, -1)).clamp_min(epsilon).unsqueeze(-1)
    ratio = float(eps0.max()) / epsilon  # the only host sync before the loop
    return eps0, (math.ceil(math.log(ratio) / -math.log(scaling)) if ratio > 1 else 0)


def _iterate(log_a, log_b, cost, epsilon, scaling, max_iter, tol, check_every):
    """Run Sinkhorn; returns f, g, n_iter and the final marginal error (B,)."""
    cost_t = cost.transpose(-1, -2).contiguous()
    eps0, n_anneal = _eps_schedule(cost, epsilon, scaling)
    f = cost.new_zeros(cost.shape[:-1])
    g = cost.new_zeros(cost.shape[:-2] + cost.shape[-1:])
    target = cost.new_full_like = None  # noqa: F841 (placeholder removed below)
    eps = eps0
    for it in range(max_iter):
        # Warm-started annealing: each eps reuses the previous potentials.
        eps = (eps0 * scaling**it).clamp_min(epsilon) if it < n_anneal else torch.full_like(eps0, epsilon)
        f = _c_transform(g, log_b, cost, eps)
        g = _c_transform(f, log_a, cost_t, eps)
        done = it + 1 - n_anneal
        if done > 0 and done % check_every == 0:
            # Checked every `check_every` steps only: each check is a host sync.
            with torch.no_grad():
                if bool((_marginal_error(f, g, log_a, log_b, cost, eps) < tol).all()):
                    break
    with torch.no_grad():
        err = _marginal_error(f.detach(), g.detach(), log_a, log_b, cost.detach(), eps)
    return f, g, it + 1, err
