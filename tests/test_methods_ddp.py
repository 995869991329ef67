"""The newer method trainers (Robust, MDLM, SpeechToEGGTrainer, Depict, DiDi, Judge) under DDP: two CPU processes
stay in sync."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from ._torchrun import torchrun

WORKER = Path(__file__).resolve().parent / "methods_ddp_worker.py"


@pytest.mark.slow
@pytest.mark.parametrize("method", ["robust", "mdlm", "speech", "depict", "didi", "judge"])
def test_two_processes_train_one_synchronised_model(tmp_path, method):
    stdout = torchrun(WORKER, tmp_path, method)
    # the two ranks print concurrently, so lines may run together: match the numbers, not up to a space
    lines = re.findall(r"rank=(\d) processes=(\d) step=(\d+) checksum=(-?\d+\.\d{10})", stdout)
    assert sorted(r for r, *_ in lines) == ["0", "1"], stdout[-2000:]
    assert {p for _, p, *_ in lines} == {"2"}  # a real process group, not two lone runs
    assert {s for _, _, s, _ in lines} == {"4"}
    assert len({c for *_, c in lines}) == 1  # DDP kept the replicas identical (the engine also checks it)
