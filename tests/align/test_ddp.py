"""FDPGTrainer and FDPOTrainer under DDP: two CPU processes (torchrun) stay in sync."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).resolve().parent / "ddp_fdpg_worker.py"


@pytest.mark.parametrize("mode", ["online", "offline", "fdpo"])
def test_two_processes_train_one_synchronised_policy(tmp_path, mode):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER),
           str(tmp_path), mode]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    lines = re.findall(r"rank=(\d) processes=(\d) step=(\d+) checksum=(\S+) updates=(\d+)", proc.stdout)
    assert sorted(r for r, *_ in lines) == ["0", "1"], proc.stdout[-2000:]
    assert {p for _, p, *_ in lines} == {"2"}  # a real process group, not two lone runs
    assert len({c for *_, c, _ in lines}) == 1  # DDP kept the replicas identical
    assert len({u for *_, u in lines}) == 1  # offline: one proposal decision for all processes
