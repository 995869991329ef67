"""Checkpoint layout, pickle-free loading, and the tree serialiser."""

from __future__ import annotations

import json
import pickle
import random

import numpy as np
import pytest
import torch
from engine_toys import AdversarialTask, RegressionTask, quiet_config
from safetensors.torch import load_file

from divmin.engine import Trainer, latest_checkpoint, load_tree, save_tree
from divmin.engine._checkpoint import capture_rng_state, restore_rng_state


def test_checkpoint_layout_and_every_file_loads_without_pickle(tmp_path):
    trainer = Trainer(RegressionTask(), quiet_config(max_steps=4, checkpoint_every=2, out_dir=tmp_path))
    trainer.fit()
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt == tmp_path / "checkpoints" / "step_0000004"
    files = sorted(p.relative_to(ckpt).as_posix() for p in ckpt.rglob("*") if p.is_file())
    assert files == [
        "engine.json",
        "models/net.safetensors",
        "optimizers/opt.json",
        "optimizers/opt.safetensors",
        "rng/rank_0.json",
        "rng/rank_0.safetensors",
        "task/rank_0.json",
        "task/rank_0.safetensors",
    ]
    for path in ckpt.rglob("*.json"):
        json.loads(path.read_text())
    for path in ckpt.rglob("*.safetensors"):
        load_file(str(path))
    engine = json.loads((ckpt / "engine.json").read_text())
    assert engine["step"] == 4 and engine["optimizer_steps"] == {"opt": 4}
    assert engine["data"] == {"epoch": 0, "batch": 4}
    saved = load_file(str(ckpt / "models" / "net.safetensors"))
    for key, value in trainer.models["net"].state_dict().items():
        assert torch.equal(saved[key], value)
    # Adam's moments live in the safetensors file, its step counters too.
    opt = load_tree(ckpt / "optimizers" / "opt")
    assert set(opt) == {"state", "param_groups"} and opt["state"][0]["exp_avg"].shape == (16, 5)


def test_resume_never_unpickles(tmp_path, monkeypatch):
    Trainer(RegressionTask(), quiet_config(max_steps=3, checkpoint_every=3, out_dir=tmp_path)).fit()

    def forbidden(*args, **kwargs):
        raise AssertionError("unpickling during resume")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    result = Trainer(RegressionTask(), quiet_config(max_steps=5, checkpoint_every=3, out_dir=tmp_path)).fit(resume=True)
    assert [r["step"] for r in result.history] == [4, 5]


class _WithTeacher(RegressionTask):
    static_models = ("teacher",)

    def models(self):
        teacher = torch.nn.Linear(5, 1).requires_grad_(False)
        return {**super().models(), "teacher": teacher}


def test_static_models_are_not_saved_but_frozen_changing_ones_are(tmp_path):
    Trainer(_WithTeacher(), quiet_config(max_steps=1, checkpoint_every=1, out_dir=tmp_path / "a")).fit()
    assert sorted(p.name for p in (latest_checkpoint(tmp_path / "a") / "models").iterdir()) == ["net.safetensors"]
    Trainer(AdversarialTask(), quiet_config(max_steps=1, checkpoint_every=1, out_dir=tmp_path / "b")).fit()
    saved = sorted(p.name for p in (latest_checkpoint(tmp_path / "b") / "models").iterdir())
    assert saved == ["critic.safetensors", "ema.safetensors", "generator.safetensors"]


def test_tree_round_trip_is_exact(tmp_path):
    base = torch.arange(12.0).reshape(3, 4)
    tree = {
        "view_a": base[0],  # views of one storage: safetensors needs them copied
        "view_b": base[:, 1],
        "ints": {0: torch.tensor(3), 7: [1, 2.5, None, True, "s"]},
        "tuple": (1, (2, 3), np.float32(1.5)),
        "u32": np.arange(5, dtype=np.uint32) * 1_000_000_000,
        "bf16": torch.ones(2, dtype=torch.bfloat16),
        "__tensor__": "a key that collides with a tag",
    }
    save_tree(tree, tmp_path / "t")
    back = load_tree(tmp_path / "t")
    assert torch.equal(back["view_a"], base[0]) and torch.equal(back["view_b"], base[:, 1])
    assert torch.equal(back["ints"][0], torch.tensor(3)) and back["ints"][7] == [1, 2.5, None, True, "s"]
    assert back["tuple"] == (1, (2, 3), 1.5) and isinstance(back["tuple"][1], tuple)
    assert back["u32"].dtype == np.uint32 and np.array_equal(back["u32"], tree["u32"])
    assert back["bf16"].dtype == torch.bfloat16
    assert back["__tensor__"] == "a key that collides with a tag"


def test_tree_rejects_arbitrary_objects_naming_the_path(tmp_path):
    with pytest.raises(TypeError, match=r"\$\.a\[1\]"):
        save_tree({"a": [1, object()]}, tmp_path / "t")


def test_rng_state_round_trip_through_files(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    save_tree(capture_rng_state(), tmp_path / "rng")
    expected = (random.random(), np.random.rand(), torch.rand(()).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng_state(load_tree(tmp_path / "rng"))
    assert (random.random(), np.random.rand(), torch.rand(()).item()) == expected
