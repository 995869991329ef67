"""Checks shared by the recipe tests: a recipe's PNG is a real figure that shows its numbers."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import pytest

from divmin.recipes._plots import figure_record


def check_figure(path: Path) -> dict:
    """matplotlib reads ``path`` as a non-blank image of plot size with a title, axis labels and a legend;
    returns the figure's record (see :func:`divmin.recipes._plots.figure_record`)."""
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] >= 250 and img.shape[1] >= 350, img.shape
    assert float(img[..., :3].std()) > 0.05  # not a blank canvas
    record = figure_record(path)
    for key in ("title", "xlabels", "ylabels", "legend"):
        assert record[key], (key, record)
    return record


def assert_close_lists(got: list, expected: list) -> None:
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)


def max_significant_digits(text: str) -> int:
    """The most significant digits of any decimal number written in ``text`` (0 if it has none);
    integers (counts) are not figures and are skipped."""
    import re

    most = 0
    for mantissa in re.findall(r"(?<![\w.])-?(\d+\.\d+)(?:e[+-]?\d+)?", text):
        digits = mantissa.replace(".", "").lstrip("0")
        most = max(most, len(digits.rstrip("0")) if "." in mantissa else len(digits))
    return most
