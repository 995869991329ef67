"""The resume oracle shared by the method tests: 2 steps, stop, resume to 4 equals 4 straight steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn


def assert_resumes_exactly(run: Callable[..., Any], tmp_path: Path, steps: int = 4) -> nn.Module:
    """``run(out_dir, max_steps, resume=False) -> (trained model, TrainResult)``, checkpointing every
    ``steps // 2`` steps with ``log_every=1``. The resumed run must log only the remaining steps (a run
    that silently started over would end at the same weights too) and end at the straight run's
    weights. Returns the straight run's model."""
    full, _ = run(tmp_path / "full", steps)
    run(tmp_path / "part", steps // 2)
    resumed, result = run(tmp_path / "part", steps, resume=True)
    logged = [rec["step"] for rec in result.history]
    assert logged == list(range(steps // 2 + 1, steps + 1)), logged
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    return full
