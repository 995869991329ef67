"""Divergences: the registry, categorical closed forms, Sinkhorn.

Everything here follows one convention (DESIGN.md): ``D_f(P || Q) = E_Q[f(P/Q)]``
with P the target and Q the model; elementwise inputs are log-ratios ``log(P/Q)``.
"""

from ._base import Divergence, as_divergence, available_divergences, divergence, register
from ._categorical import categorical_divergence
from ._family import (
    JS,
    ForwardKL,
    Jeffreys,
    NeymanChi2,
    PearsonChi2,
    ReverseKL,
    SquaredHellinger,
    TotalVariation,
)
from ._sinkhorn import (
    SinkhornConvergenceWarning,
    SinkhornResult,
    available_costs,
    sinkhorn,
    sinkhorn_divergence,
)
from ._parametric import (
    Alpha,
    GeneralizedJS,
    SkewForwardKL,
    SkewReverseKL,
    SoftenedForwardKL,
    SoftenedReverseKL,
)

__all__ = [
    "Alpha",
    "Divergence",
    "ForwardKL",
    "GeneralizedJS",
    "JS",
    "Jeffreys",
    "NeymanChi2",
    "PearsonChi2",
    "ReverseKL",
    "SkewForwardKL",
    "SkewReverseKL",
    "SoftenedForwardKL",
    "SoftenedReverseKL",
    "SinkhornConvergenceWarning",
    "SinkhornResult",
    "SquaredHellinger",
    "TotalVariation",
    "as_divergence",
    "available_costs",
    "available_divergences",
    "categorical_divergence",
    "divergence",
    "register",
    "sinkhorn",
    "sinkhorn_divergence",
]
