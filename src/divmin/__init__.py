"""divmin: training, aligning and distilling models by divergence minimization."""

from .divergences import (
    Discrepancy,
    Divergence,
    as_divergence,
    available_divergences,
    available_kinds,
    categorical_divergence,
    divergence,
    SinkhornConvergenceWarning,
    SinkhornResult,
    register,
    sinkhorn,
    sinkhorn_divergence,
)

__version__ = "0.1.0"

__all__ = [
    "Discrepancy",
    "Divergence",
    "as_divergence",
    "available_divergences",
    "available_kinds",
    "categorical_divergence",
    "divergence",
    "register",
    "sinkhorn",
    "sinkhorn_divergence",
    "SinkhornConvergenceWarning",
    "SinkhornResult",
]
