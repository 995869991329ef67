"""FDPGTrainer on a tiny GPT-2: training online and offline, resume, argument checks.

The sampler and completion log-probabilities are tested in tests/lm."""

from __future__ import annotations

import json

import pytest
import torch

from divmin.align import EnergyTarget, FDPGConfig, FDPGTrainer, PointwiseConstraint
from divmin.engine import EngineConfig
from tests.align import _tiny

def _model(seed=0):
    return _tiny.model(seed).eval()


def _target():
    return EnergyTarget() * PointwiseConstraint(lambda texts: ["good" in t.split() for t in texts], epsilon=0.01)


def _trainer(tmp_path, steps, mode="online", divergence="js", **kw):
    engine = EngineConfig(max_steps=steps, log_every=1, out_dir=str(tmp_path), progress=False, tensorboard=False,
                          checkpoint_every=kw.pop("checkpoint_every", None), seed=0)
    offline = {"proposal_update_every": 2} if mode == "offline" else {}  # refused online
    cfg = FDPGConfig(divergence=divergence, lr=1e-2, contexts_per_step=2, samples_per_context=16,
                     max_new_tokens=5, mode=mode, engine=engine, **offline, **kw)
    return FDPGTrainer(_model(3).train(), _tiny.tokenizer(), _target(),
                       contexts=["question about cats", "question about dogs"], config=cfg)


def _metrics(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("divergence", ["js", "forward_kl"])
def test_online_training_raises_alignment(tmp_path, divergence):
    trainer = _trainer(tmp_path, 20, divergence=divergence)
    trainer.fit()
    rows = [r for r in _metrics(tmp_path) if "alignment" in r]
    first = sum(r["alignment"] for r in rows[:5]) / 5
    last = sum(r["alignment"] for r in rows[-5:]) / 5
    assert last > first + 0.2, (first, last)
    assert all(k in rows[-1] for k in ("kl_target_policy", "kl_policy_target", "tv", "js", "ess", "entropy"))
    # online: pi / q = 1 exactly; P / pi is not uniform, so its effective sample size is below 1
    assert all(r["ess"] == pytest.approx(1.0) and 0 < r["ess_target"] < 1 for r in rows)


def test_offline_mode_trains_and_replaces_the_proposal(tmp_path):
    trainer = _trainer(tmp_path, 20, mode="offline", divergence="forward_kl")
    trainer.fit()
    rows = [r for r in _metrics(tmp_path) if "alignment" in r]
    assert trainer.proposal_updates >= 1
    assert rows[-1]["alignment"] > rows[0]["alignment"]
    assert any(r["ess"] < 0.999 for r in rows)  # samples really came from a different distribution


def test_resume_replays_the_uninterrupted_run(tmp_path):
    full = _trainer(tmp_path / "full", 6)
    full.fit()
    part = _trainer(tmp_path / "part", 3, checkpoint_every=3)
    part.fit()
    resumed = _trainer(tmp_path / "part", 6, checkpoint_every=3)
    resumed.fit(resume=True)
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)
    assert resumed.log_z("question about cats") == pytest.approx(full.log_z("question about cats"))


@pytest.mark.parametrize("kwargs, match", [(dict(mode="sideways"), "mode"), (dict(samples_per_context=1), "samples"),
                                           (dict(divergence="nope"), "valid names"), (dict(lr=0.0), "lr"),
                                           (dict(baseline_decay=1.0), "baseline_decay")])
def test_bad_config_names_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FDPGConfig(**kwargs)


def test_bad_trainer_arguments():
    with pytest.raises(TypeError, match="target"):
        FDPGTrainer(_model(), _tiny.tokenizer(), lambda x: x)
    with pytest.raises(ValueError, match="contexts"):
        FDPGTrainer(_model(), _tiny.tokenizer(), _target(), contexts="one string")
