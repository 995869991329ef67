"""Two CPU processes (torchrun, gloo) == one process with the same global batch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from engine_toys import RegressionTask, read_jsonl
from safetensors.torch import load_file

from divmin.engine import EngineConfig, Trainer
from tests._torchrun import torchrun

WORKER = Path(__file__).resolve().parent / "ddp_worker.py"
MAX_STEPS, BATCH_PER_PROCESS, ACCUM = 12, 4, 2


def _torchrun(out_dir: Path, *extra: str) -> None:
    stdout = torchrun(WORKER, out_dir, MAX_STEPS, BATCH_PER_PROCESS, ACCUM, *extra, timeout=240)
    assert stdout.count("processes=2") == 2, stdout[-2000:]


@pytest.mark.slow
def test_two_process_ddp_with_stop_and_resume_matches_single_process(tmp_path):
    ddp_dir, ref_dir = tmp_path / "ddp", tmp_path / "ref"
    # 2 processes x batch 4, stopped after step 5 (checkpoint), then resumed to the end.
    _torchrun(ddp_dir, "--stop-at", "5")
    stopped = read_jsonl(ddp_dir / "metrics.jsonl")
    assert [r["step"] for r in stopped] == [1, 2, 3, 4, 5]
    _torchrun(ddp_dir, "--resume")

    # Same config as the worker, one process, batch 2 x 4: the same global batch.
    config = EngineConfig(
        max_steps=MAX_STEPS, grad_accum_steps=ACCUM, log_every=1, checkpoint_every=3, out_dir=ref_dir,
        progress=False, tensorboard=False, lr_schedule="linear", warmup_steps=2, max_grad_norm=0.5, cpu=True,
    )  # fmt: skip
    ref = Trainer(RegressionTask(batch_size=2 * BATCH_PER_PROCESS, stochastic=False), config).fit()

    ddp = read_jsonl(ddp_dir / "metrics.jsonl")
    assert [r["step"] for r in ddp] == [r["step"] for r in ref.history] == list(range(1, MAX_STEPS + 1))
    for mine, theirs in zip(ddp, ref.history):
        assert mine.keys() == theirs.keys()
        for key in mine:
            assert mine[key] == pytest.approx(theirs[key], abs=1e-5, rel=1e-5), (mine["step"], key)
    final = ddp_dir / "checkpoints" / "step_0000012"
    ddp_weights = load_file(final / "models" / "net.safetensors")
    ref_weights = load_file(ref_dir / "checkpoints" / "step_0000012" / "models" / "net.safetensors")
    assert ddp_weights.keys() == ref_weights.keys()
    for key in ddp_weights:
        torch.testing.assert_close(ddp_weights[key], ref_weights[key], atol=1e-5, rtol=1e-5)
    # Per-process state really was per process.
    assert json.loads((final / "engine.json").read_text())["num_processes"] == 2
    assert {p.name for p in (final / "rng").iterdir()} >= {"rank_0.json", "rank_1.json"}
    # Sanity: training moved the weights away from the initial ones.
    init = RegressionTask(stochastic=False)
    torch.manual_seed(0)
    init_weights = init.models()["net"].state_dict()
    assert any(not torch.allclose(init_weights[k], ddp_weights[k]) for k in ddp_weights)
