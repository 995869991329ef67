"""Registry members that are not f-divergences: entropic optimal transport.

``divergence("sinkhorn", epsilon=..., cost=..., debias=...)`` is the registry's
handle on :func:`sinkhorn_divergence` (debiased, ``S >= 0``, 0 iff the measures
agree) or, with ``debias=False``, the entropic OT value ``OT_eps`` between two
point clouds. Its kind is ``"optimal_transport"``: methods that need an f
(closed forms, g, h) refuse it by kind; those that compare sample clouds (SinKD,
sample metrics) take it. Call shape: model samples first, target samples second.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import ClassVar

from torch import Tensor

from ._base import Discrepancy, register
from ._sinkhorn import _DEFAULTS, _resolve_cost, available_costs, sinkhorn, sinkhorn_divergence

__all__ = ["Sinkhorn"]


@register("sinkhorn")
@dataclasses.dataclass(frozen=True)
class Sinkhorn(Discrepancy):
    """Entropic optimal transport between empirical measures (Cuturi 2013; Feydy et al. 2019).

    >>> import torch
    >>> from divmin import divergence
    >>> x = torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    >>> round(float(divergence("sinkhorn:epsilon=0.5").between(x + 1.0, x)), 4)  # ||shift||^2
    2.0
    """

    kind: ClassVar[str] = "optimal_transport"

    epsilon: float = 0.1  # entropic regularisation, in the cost's units
    cost: str = "sqeuclidean"  # a name in divmin.divergences.available_costs()
    debias: bool = True  # Sinkhorn divergence S (True) or the entropic OT value OT_eps (False)

    def __post_init__(self) -> None:
        eps = self.epsilon
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not (math.isfinite(eps) and eps > 0):
            raise ValueError(f"`epsilon` must be a finite number > 0, got {eps!r}")
        if self.cost not in available_costs():
            raise ValueError(f"`cost` must be one of {available_costs()}, got {self.cost!r}")
        if not isinstance(self.debias, bool):
            raise TypeError(f"`debias` must be a bool, got {self.debias!r}")

    def between(self, model_samples: Tensor, target_samples: Tensor, *, model_weights: Tensor | None = None,
                target_weights: Tensor | None = None, **sinkhorn_kwargs) -> Tensor:
        """The discrepancy between ``(n, d)`` (or ``(B, n, d)``) model samples and target samples.

        Weights default to uniform; ``sinkhorn_kwargs`` go to :func:`divmin.sinkhorn`.
        """
        if self.debias:
            return sinkhorn_divergence(model_samples, target_samples, a=model_weights, b=target_weights,
                                       cost=self.cost, epsilon=float(self.epsilon), **sinkhorn_kwargs)
        x, y = model_samples, target_samples
        a = x.new_full(x.shape[:-1], 1 / x.shape[-2]) if model_weights is None else model_weights
        b = y.new_full(y.shape[:-1], 1 / y.shape[-2]) if target_weights is None else target_weights
        unknown = set(sinkhorn_kwargs) - set(_DEFAULTS)
        if unknown:
            raise TypeError(f"unexpected keyword argument(s) {sorted(unknown)}; valid: {list(_DEFAULTS)}")
        return sinkhorn(a, b, _resolve_cost(self.cost)(x, y), epsilon=float(self.epsilon),
                        **sinkhorn_kwargs).objective
