"""Exact resume: an interrupted + resumed run logs exactly what the uninterrupted run logs."""

from __future__ import annotations

import pytest
import torch
from engine_toys import AdversarialTask, RegressionTask, quiet_config, read_jsonl

import divmin.engine._checkpoint as ckpt_mod
import divmin.engine._trainer as trainer_mod
from divmin.engine import Trainer
from divmin.engine._checkpoint import list_checkpoints
from divmin.engine._data import BatchStream


def _regression_config(out_dir):
    # 64 samples / batch 6 = 11 batches (last one partial); accum 2 => epochs end
    # mid-step and checkpoints (every 3 steps) land mid-epoch.
    return quiet_config(
        max_steps=20,
        grad_accum_steps=2,
        checkpoint_every=3,
        keep_checkpoints=2,
        eval_every=4,
        lr_schedule="cosine",
        warmup_steps=3,
        out_dir=out_dir,
    )


def _crash_then_resume(out_dir, crash_at: int):
    with pytest.raises(KeyboardInterrupt):
        Trainer(RegressionTask(batch_size=6, crash_at=crash_at), _regression_config(out_dir)).fit()
    trainer = Trainer(RegressionTask(batch_size=6), _regression_config(out_dir))
    return trainer, trainer.fit(resume=True)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    trainer = Trainer(RegressionTask(batch_size=6), _regression_config(out))
    return out, trainer.fit(), trainer.models["net"].state_dict()


def test_resumed_run_logs_exactly_the_uninterrupted_metrics(uninterrupted, tmp_path):
    full_dir, full, full_weights = uninterrupted
    trainer, resumed = _crash_then_resume(tmp_path, crash_at=13)  # crash in step 14; last ckpt at 12
    assert [r["step"] for r in resumed.history] == list(range(13, 21))
    by_step = {r["step"]: r for r in full.history}
    for record in resumed.history:
        assert record == by_step[record["step"]]  # every metric, bit-exact
    assert any("eval/mse" in r for r in resumed.history)
    # The file has the crashed run's steps 1..12, its extra 13 truncated, then the resumed ones.
    assert read_jsonl(tmp_path / "metrics.jsonl") == read_jsonl(full_dir / "metrics.jsonl")
    for key, value in trainer.models["net"].state_dict().items():
        assert torch.equal(value, full_weights[key])
    assert resumed.optimizer_steps == full.optimizer_steps == {"opt": 20}
    assert [s for s, _ in list_checkpoints(tmp_path / "checkpoints")] == [18, 20]


@pytest.mark.parametrize("crash_at", [1, 6])  # 1: no checkpoint yet (fresh start); 6: resume in epoch 2
def test_resume_exact_at_other_points(uninterrupted, tmp_path, crash_at):
    _, full, _ = uninterrupted
    _, resumed = _crash_then_resume(tmp_path, crash_at=crash_at)
    by_step = {r["step"]: r for r in full.history}
    assert resumed.history and all(r == by_step[r["step"]] for r in resumed.history)


@pytest.mark.parametrize("skip", ["rng", "data", "task_state"])
def test_comparison_detects_each_missing_restore(uninterrupted, tmp_path, monkeypatch, skip):
    """Negative controls: dropping any piece of the restored state changes the metrics."""
    _, full, _ = uninterrupted
    if skip == "rng":
        monkeypatch.setattr(trainer_mod, "load_rng", lambda path, acc: None)
    elif skip == "data":
        monkeypatch.setattr(BatchStream, "load_state", lambda self, state: None)
    else:
        monkeypatch.setattr(RegressionTask, "load_state_dict", lambda self, state: None)
    _, resumed = _crash_then_resume(tmp_path, crash_at=13)
    by_step = {r["step"]: r for r in full.history}
    assert any(r != by_step[r["step"]] for r in resumed.history)


def test_resume_two_optimizers_ema_and_extra_state(tmp_path):
    """No dataset, critic 2x per step, generator every 2nd step, EMA model, running log Z."""
    config = quiet_config(max_steps=9, checkpoint_every=4, out_dir=tmp_path)
    full_trainer = Trainer(AdversarialTask(critic_steps=2, gen_every=2), config)
    full = full_trainer.fit()
    resumed_trainer = Trainer(AdversarialTask(critic_steps=2, gen_every=2), config)
    resumed = resumed_trainer.fit(resume=tmp_path / "checkpoints" / "step_0000004")
    assert [r["step"] for r in resumed.history] == [5, 6, 7, 8, 9]
    assert resumed.history == full.history[4:]
    assert resumed.optimizer_steps == full.optimizer_steps == {"generator": 4, "critic": 18}
    for name in ("generator", "critic", "ema"):
        for a, b in zip(full_trainer.models[name].parameters(), resumed_trainer.models[name].parameters()):
            assert torch.equal(a, b)


def test_fresh_fit_refuses_existing_checkpoints_and_resume_without_one_starts_fresh(tmp_path):
    cfg = quiet_config(max_steps=2, checkpoint_every=1, out_dir=tmp_path)
    first = Trainer(RegressionTask(), cfg).fit(resume=True)  # nothing to resume: fresh run
    assert [r["step"] for r in first.history] == [1, 2]
    with pytest.raises(FileExistsError):
        Trainer(RegressionTask(), cfg).fit()
    again = Trainer(RegressionTask(), cfg).fit(resume=True)  # already at max_steps: nothing to do
    assert again.step == 2 and again.history == []


def test_request_stop_checkpoints_and_ends_early(tmp_path):
    result = Trainer(RegressionTask(stop_at=4), quiet_config(max_steps=10, checkpoint_every=3, out_dir=tmp_path)).fit()
    assert result.stopped_early and result.step == 4
    assert [s for s, _ in list_checkpoints(tmp_path / "checkpoints")] == [3, 4]
    assert ckpt_mod.latest_checkpoint(tmp_path).name == "step_0000004"
