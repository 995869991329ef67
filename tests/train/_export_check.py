"""What every `divmin train METHOD` end-to-end test checks of its export (shared by the method tests)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from divmin.engine import load_exported
from divmin.train import export_run


def assert_export_reloads(trained: nn.Module, run_dir: Path, outputs: Callable[[nn.Module], torch.Tensor]) -> nn.Module:
    """``load_exported(run_dir/final)`` gives ``outputs`` equal to the trained module's, and so does a
    re-export from the run's last checkpoint (``divmin export``); returns the reloaded module."""
    final = run_dir / "final"
    with torch.no_grad():
        want = outputs(trained.eval())
        loaded = load_exported(final)
        torch.testing.assert_close(outputs(loaded), want, rtol=0, atol=0)
        shutil.rmtree(final)
        export_run(run_dir)
        torch.testing.assert_close(outputs(load_exported(final)), want, rtol=0, atol=0)
    return loaded
