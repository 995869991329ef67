"""`divmin train kd` under torchrun with 2 CPU processes: one export, from the averaged run."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from .._torchrun import torchrun


@pytest.mark.slow
def test_train_kd_under_torchrun(tmp_path):
    out = tmp_path / "kd"
    stdout = torchrun("-m", "divmin", "train", "kd", "--out", out, "--set", "kd.engine.max_steps=3",
                      "--set", "kd.engine.progress=False", "--set", "kd.engine.tensorboard=False", "--set", "kd.lr=0.01")
    assert stdout.count("exported ") == 1  # rank 0 alone writes and reports
    ckpt = out / "checkpoints" / "step_0000003"
    assert json.loads((ckpt / "engine.json").read_text())["num_processes"] == 2
    # the export is the checkpointed (rank-identical, gradient-averaged) student
    exported = AutoModelForCausalLM.from_pretrained(out / "final").state_dict()
    saved = load_file(ckpt / "models" / "student.safetensors")
    assert all(torch.equal(exported[k], saved[k]) for k in saved if k in exported)
    assert sum(k in exported for k in saved) >= len(saved) - 1  # at most the tied lm_head is stored once
