"""The newer method trainers (RobustTrainer, MDLMTrainer, SpeechToEGG, DepictTrainer) under DDP: two CPU processes
stay in sync."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).resolve().parent / "methods_ddp_worker.py"


@pytest.mark.slow
@pytest.mark.parametrize("method", ["robust", "mdlm", "speech", "depict"])
def test_two_processes_train_one_synchronised_model(tmp_path, method):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER),
           str(tmp_path), method]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    # the two ranks print concurrently, so lines may run together: match the numbers, not up to a space
    lines = re.findall(r"rank=(\d) processes=(\d) step=(\d+) checksum=(-?\d+\.\d{10})", proc.stdout)
    assert sorted(r for r, *_ in lines) == ["0", "1"], proc.stdout[-2000:]
    assert {p for _, p, *_ in lines} == {"2"}  # a real process group, not two lone runs
    assert {s for _, _, s, _ in lines} == {"4"}
    assert len({c for *_, c in lines}) == 1  # DDP kept the replicas identical (the engine also checks it)
