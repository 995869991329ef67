"""FDPGTrainer and FDPOTrainer under DDP: two CPU processes (torchrun) stay in sync."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from .._torchrun import torchrun

WORKER = Path(__file__).resolve().parent / "ddp_fdpg_worker.py"


@pytest.mark.parametrize("mode", ["online", "offline", "fdpo"])
def test_two_processes_train_one_synchronised_policy(tmp_path, mode):
    stdout = torchrun(WORKER, tmp_path, mode)
    lines = re.findall(r"rank=(\d) processes=(\d) step=(\d+) checksum=(\S+) updates=(\d+)", stdout)
    assert sorted(r for r, *_ in lines) == ["0", "1"], stdout[-2000:]
    assert {p for _, p, *_ in lines} == {"2"}  # a real process group, not two lone runs
    assert len({c for *_, c, _ in lines}) == 1  # DDP kept the replicas identical
    assert len({u for *_, u in lines}) == 1  # offline: one proposal decision for all processes
