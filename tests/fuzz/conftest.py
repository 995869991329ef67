"""Print the fuzz suite's table (cases per function: correct value, clear error, anything else) after a run."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seeded_torch():
    """Networks built inside a case draw their weights from torch's global generator: seed it per test, so a
    case's outcome does not depend on which tests ran before it (the cases themselves are derandomized)."""
    torch.manual_seed(0)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    from ._harness import TALLY

    if not TALLY:
        return
    rows = sorted(TALLY.items())
    terminalreporter.write_sep("-", "fuzz suite: outcomes per public function")
    terminalreporter.write_line(f"{'function':30} {'cases':>6} {'value':>6} {'clear error':>12} {'other':>6}")
    for name, c in rows:
        total = sum(c.values())
        terminalreporter.write_line(f"{name:30} {total:6d} {c['value']:6d} {c['clear error']:12d} {c['other']:6d}")
