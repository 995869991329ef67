"""Divergences: the registry, categorical closed forms, Sinkhorn.

Everything here follows one convention (DESIGN.md): ``D_f(P || Q) = E_Q[f(P/Q)]``
with P the target and Q the model; elementwise inputs are log-ratios ``log(P/Q)``;
functions of two distributions take the model first and the target second.
"""

from ._base import (Discrepancy, Divergence, as_divergence, available_divergences, available_kinds, divergence,
                    register)
from ._capabilities import available_capabilities, capability
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
from ._transport import Sinkhorn
from ._integral import IntegralDivergence, IntegralF, IntegralForwardKL, IntegralReverseKL
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
    "Discrepancy",
    "Divergence",
    "ForwardKL",
    "GeneralizedJS",
    "IntegralDivergence",
    "IntegralF",
    "IntegralForwardKL",
    "IntegralReverseKL",
    "JS",
    "Jeffreys",
    "NeymanChi2",
    "PearsonChi2",
    "ReverseKL",
    "SkewForwardKL",
    "SkewReverseKL",
    "SoftenedForwardKL",
    "SoftenedReverseKL",
    "Sinkhorn",
    "SinkhornConvergenceWarning",
    "SinkhornResult",
    "SquaredHellinger",
    "TotalVariation",
    "as_divergence",
    "available_capabilities",
    "available_costs",
    "available_divergences",
    "available_kinds",
    "capability",
    "categorical_divergence",
    "divergence",
    "register",
    "sinkhorn",
    "sinkhorn_divergence",
]
