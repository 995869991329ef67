"""Divergences: the registry, categorical closed forms, Sinkhorn.

Everything here follows one convention ([DESIGN.md][the-convention]): ``D_f(P || Q) = E_Q[f(P/Q)]``
with P the target and Q the model; elementwise inputs are log-ratios ``log(P/Q)``;
functions of two distributions take the model first and the target second.
"""

from ._base import (Discrepancy, Divergence, as_divergence, available_divergences, available_kinds, divergence,
                    register)
from ._capabilities import available_capabilities, capability
from ._hooks import TritonTerms
from ._categorical import categorical_divergence
from ._checks import NonFiniteInputError, check_float_tensor, check_real
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

# the API page (members_order: __all__) lists the entry points first, internals last
__all__ = [
    "divergence",
    "available_divergences",
    "categorical_divergence",
    "sinkhorn",
    "sinkhorn_divergence",
    "as_divergence",
    "register",
    "available_kinds",
    "available_capabilities",
    "capability",
    "available_costs",
    "Divergence",
    "ForwardKL",
    "ReverseKL",
    "JS",
    "GeneralizedJS",
    "Alpha",
    "IntegralDivergence",
    "IntegralF",
    "IntegralForwardKL",
    "IntegralReverseKL",
    "Jeffreys",
    "NeymanChi2",
    "PearsonChi2",
    "SkewForwardKL",
    "SkewReverseKL",
    "SoftenedForwardKL",
    "SoftenedReverseKL",
    "Sinkhorn",
    "SinkhornResult",
    "SquaredHellinger",
    "TotalVariation",
    "Discrepancy",
    "TritonTerms",
    "SinkhornConvergenceWarning",
    "NonFiniteInputError",
    "check_float_tensor",
    "check_real",
]
