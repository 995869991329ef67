"""Metrics shared by the methods."""

from ._calibration import calibration_error, top_label_calibration_error
from ._diversity import distinct_n, self_bleu
from ._target_metrics import TargetMetrics, acceptance_rate, exact_divergence, is_divergence, is_expectation, target_metrics

__all__ = [
    "TargetMetrics",
    "acceptance_rate",
    "calibration_error",
    "distinct_n",
    "exact_divergence",
    "is_divergence",
    "is_expectation",
    "self_bleu",
    "target_metrics",
    "top_label_calibration_error",
]
