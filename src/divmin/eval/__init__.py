"""Metrics shared by the methods."""

from ._calibration import calibration_error, top_label_calibration_error

__all__ = ["calibration_error", "top_label_calibration_error"]
