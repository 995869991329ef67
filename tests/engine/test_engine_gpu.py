"""The same engine on CUDA: exact resume with CUDA RNG state, fp16/bf16 with two optimizers."""

from __future__ import annotations

import json
import math

import pytest
import torch
from engine_toys import AdversarialTask, RegressionTask, quiet_config

from divmin.engine import Trainer, latest_checkpoint

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def test_exact_resume_on_cuda(tmp_path):
    def config(out):
        return quiet_config(max_steps=12, grad_accum_steps=2, checkpoint_every=5, out_dir=out, cpu=False)

    full_trainer = Trainer(RegressionTask(batch_size=6), config(tmp_path / "a"))
    full = full_trainer.fit()
    assert next(full_trainer.models["net"].parameters()).is_cuda
    with pytest.raises(KeyboardInterrupt):
        Trainer(RegressionTask(batch_size=6, crash_at=7), config(tmp_path / "b")).fit()
    resumed = Trainer(RegressionTask(batch_size=6), config(tmp_path / "b")).fit(resume=True)
    assert resumed.history == full.history[5:]
    rng = json.loads((latest_checkpoint(tmp_path / "b") / "rng" / "rank_0.json").read_text())
    assert "cuda" in rng


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_two_optimizers_on_cuda(precision):
    task = AdversarialTask(critic_steps=3, gen_every=1)
    result = Trainer(task, quiet_config(max_steps=20, mixed_precision=precision, cpu=False)).fit()
    assert result.optimizer_steps == {"generator": 20, "critic": 60}
    assert all(math.isfinite(v) for v in result.metrics.values())
