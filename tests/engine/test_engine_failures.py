"""A run never ends "successfully" on garbage: NaN guard, damaged checkpoints, one run per directory."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import pytest
import torch
from engine_toys import RegressionTask, quiet_config, read_jsonl
from safetensors.torch import load_file

from divmin.engine import (EngineConfig, NonFiniteError, RunLockedError, Trainer, latest_checkpoint, run_lock,
                           verify_checkpoint)


class _PoisonedTask(RegressionTask):
    """Regression whose loss is NaN (or whose gradient is inf) at the given engine steps."""

    def __init__(self, nan_at=(), inf_grad_at=(), **kw) -> None:
        super().__init__(stochastic=False, **kw)
        self.nan_at, self.inf_grad_at = set(nan_at), set(inf_grad_at)

    def train_step(self, batch, ctx):
        out = super().train_step(batch, ctx)
        if ctx.step in self.nan_at:
            out.loss = out.loss * float("nan")
        if ctx.step in self.inf_grad_at:
            out.loss = out.loss + 0 * _inf_grad(ctx.models["net"][0].weight).sum()
        return out


class _InfGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return torch.full_like(g, float("inf"))


def _inf_grad(x):
    return _InfGrad.apply(x)


def _weights(trainer):
    return {k: v.clone() for k, v in trainer.models["net"].state_dict().items()}


def test_nan_loss_stops_the_run_naming_step_terms_and_last_good_checkpoint(tmp_path):
    trainer = Trainer(_PoisonedTask(nan_at={3}), quiet_config(max_steps=8, checkpoint_every=2, out_dir=tmp_path))
    with pytest.raises(NonFiniteError, match=r"step 3 .*loss=nan.*mse=.*step_0000002") as err:
        trainer.fit()
    assert "on_nonfinite='skip'" in str(err.value)
    # the bad update was not applied and no checkpoint after it exists, nor one with NaN weights
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert ckpts == ["step_0000002"]
    for value in load_file(str(tmp_path / "checkpoints/step_0000002/models/net.safetensors")).values():
        assert torch.isfinite(value).all()


def test_infinite_gradient_with_a_finite_loss_is_caught_too():
    with pytest.raises(NonFiniteError, match=r"step 1 .*grad_norm=(inf|nan)"):
        Trainer(_PoisonedTask(inf_grad_at={1}), quiet_config(max_steps=4)).fit()


def test_a_nan_weight_stops_at_the_first_step_also_without_clipping():
    class NaNWeight(_PoisonedTask):
        def models(self):
            models = super().models()
            with torch.no_grad():
                models["net"][0].weight[0, 0] = float("nan")
            return models

    with pytest.raises(NonFiniteError, match=r"step 0 "):
        Trainer(NaNWeight(), quiet_config(max_steps=3, max_grad_norm=None)).fit()


def test_skip_policy_drops_and_counts_bad_updates_and_keeps_weights_finite(tmp_path):
    config = quiet_config(max_steps=8, on_nonfinite="skip", out_dir=tmp_path)
    trainer = Trainer(_PoisonedTask(nan_at={2, 5}), config)
    with pytest.warns(RuntimeWarning, match="skipped non-finite update at step 2"):
        result = trainer.fit()
    assert result.skipped_updates == {"opt": 2} and result.optimizer_steps == {"opt": 6}
    assert all(torch.isfinite(v).all() for v in _weights(trainer).values())
    logged = {r["step"]: r.get("skipped_updates") for r in read_jsonl(tmp_path / "metrics.jsonl")}
    assert logged[3] == 1.0 and logged[6] == 2.0 and logged[2] is None


def test_skip_policy_gives_up_when_no_update_succeeds(monkeypatch):
    monkeypatch.setattr("divmin.engine._context.MAX_CONSECUTIVE_SKIPS", 3)
    with pytest.raises(NonFiniteError, match="3 non-finite updates of 'opt' in a row"):
        with pytest.warns(RuntimeWarning):
            Trainer(_PoisonedTask(nan_at=range(10)), quiet_config(max_steps=10, on_nonfinite="skip")).fit()


def test_on_nonfinite_is_validated():
    with pytest.raises(ValueError, match="on_nonfinite"):
        EngineConfig(on_nonfinite="ignore")


def test_no_checkpoint_is_written_with_non_finite_weights(tmp_path):
    class BrokenEMA(_PoisonedTask):
        """A frozen, checkpointed EMA copy that a bug fills with inf at step 3 (the loss stays finite)."""

        def models(self):
            ema = torch.nn.Linear(5, 1).requires_grad_(False)
            return {**super().models(), "ema": ema}

        def train_step(self, batch, ctx):
            if ctx.step == 3:
                with torch.no_grad():
                    ctx.unwrap("ema").bias.fill_(float("inf"))
            return super().train_step(batch, ctx)

    config = quiet_config(max_steps=6, checkpoint_every=2, out_dir=tmp_path)
    with pytest.raises(NonFiniteError, match=r"step 4: parameter 'bias' of model 'ema'"):
        Trainer(BrokenEMA(), config).fit()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_0000002"]


# ------------------------------------------------------------------ damaged checkpoints
def _run(tmp_path, max_steps, resume=False):
    trainer = Trainer(RegressionTask(), quiet_config(max_steps=max_steps, checkpoint_every=2, keep_checkpoints=None,
                                                     out_dir=tmp_path))
    result = trainer.fit(resume=resume)
    return trainer, result


def _damage(path, how):
    if how == "truncated-weights":
        f = path / "models" / "net.safetensors"
        f.write_bytes(f.read_bytes()[:-20])
    elif how == "flipped-byte":
        f = path / "optimizers" / "opt.safetensors"
        data = bytearray(f.read_bytes())
        data[-1] ^= 0xFF
        f.write_bytes(bytes(data))
    elif how == "empty-engine-json":
        (path / "engine.json").write_text("")
    elif how == "missing-rng":
        (path / "rng" / "rank_0.safetensors").unlink()


@pytest.mark.parametrize("how", ["truncated-weights", "flipped-byte", "empty-engine-json", "missing-rng"])
def test_resume_falls_back_to_the_newest_intact_checkpoint_and_replays_exactly(tmp_path, how):
    reference, _ = _run(tmp_path / "ref", 6)
    _run(tmp_path / "run", 6)
    newest = tmp_path / "run" / "checkpoints" / "step_0000006"
    _damage(newest, how)
    assert verify_checkpoint(newest) is not None
    with pytest.warns(RuntimeWarning, match="step_0000006"):
        assert latest_checkpoint(tmp_path / "run") == tmp_path / "run" / "checkpoints" / "step_0000004"
    (newest / "engine.json").unlink(missing_ok=True)  # what is left of it no longer counts as a checkpoint
    resumed, result = _run(tmp_path / "run", 6, resume=True)
    assert [r["step"] for r in result.history] == [5, 6]
    for key, value in _weights(reference).items():
        assert torch.equal(_weights(resumed)[key], value), key


def test_every_checkpoint_damaged_is_an_error_not_a_silent_restart(tmp_path):
    _run(tmp_path, 4)
    for path in (tmp_path / "checkpoints").iterdir():
        _damage(path, "truncated-weights")
    with pytest.raises(ValueError, match="no intact checkpoint .*step_0000002.*net.safetensors"):
        _run(tmp_path, 6, resume=True)


def test_engine_json_lists_every_file_with_its_checksum(tmp_path):
    _run(tmp_path, 2)
    path = tmp_path / "checkpoints" / "step_0000002"
    files = json.loads((path / "engine.json").read_text())["files"]
    on_disk = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file() and p.name != "engine.json")
    assert sorted(files) == on_disk and verify_checkpoint(path) is None


def test_half_written_last_metrics_line_is_dropped_with_a_warning(tmp_path):
    _run(tmp_path, 4)
    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 5, "loss": 0.')  # what a kill during a write leaves
    with pytest.warns(RuntimeWarning, match="dropped 1 unreadable line"):
        _run(tmp_path, 6, resume=True)
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]


def test_resume_without_a_checkpoint_says_it_starts_from_step_zero(tmp_path):
    with pytest.warns(RuntimeWarning, match="no checkpoint .* starting from step 0"):
        _run(tmp_path, 2, resume=True)


def test_rerun_into_a_directory_with_checkpoints_names_both_ways_to_resume(tmp_path):
    _run(tmp_path, 2)
    with pytest.raises(FileExistsError, match=r"fit\(resume=True\).*--resume"):
        _run(tmp_path, 2)


# ------------------------------------------------------------------ one run per directory
def _hold_lock_in_subprocess(directory):
    code = ("import sys, time; from divmin.engine import run_lock\n"
            "with run_lock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(directory)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_run_into_a_locked_directory_is_refused_naming_the_holder(tmp_path):
    proc = _hold_lock_in_subprocess(tmp_path)
    try:
        with pytest.raises(RunLockedError, match=rf"PID {proc.pid}\b"):
            Trainer(RegressionTask(), quiet_config(max_steps=2, out_dir=tmp_path)).fit()
        assert not (tmp_path / "metrics.jsonl").exists()  # refused before writing anything
    finally:
        proc.kill()  # as kill -9: the kernel frees the lock with the process
        proc.wait()
    deadline = time.monotonic() + 10
    while True:  # the lock is free once the process is gone
        try:
            Trainer(RegressionTask(), quiet_config(max_steps=2, out_dir=tmp_path)).fit()
            break
        except RunLockedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_the_lock_is_reentrant_in_one_process_and_released_after(tmp_path):
    from divmin.engine import _lock

    with run_lock(tmp_path):
        Trainer(RegressionTask(), quiet_config(max_steps=2, out_dir=tmp_path)).fit()  # takes it again: no error
        with run_lock(tmp_path):
            assert _lock._HELD[tmp_path.resolve()][1] == 2  # one lock, held twice
    assert tmp_path.resolve() not in _lock._HELD
    proc = _hold_lock_in_subprocess(tmp_path)  # released: another process can take it (asserts it printed "locked")
    proc.kill()
    proc.wait()


def test_an_output_path_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        Trainer(RegressionTask(), quiet_config(max_steps=1, out_dir=tmp_path / "f")).fit()


def test_loss_metric_is_finite_in_a_clean_run():
    result = Trainer(_PoisonedTask(), quiet_config(max_steps=3)).fit()
    assert math.isfinite(result.metrics["loss"]) and result.skipped_updates == {"opt": 0}


def test_resuming_a_finished_run_reports_its_last_metrics(tmp_path):
    _, first = _run(tmp_path, 4)
    _, again = _run(tmp_path, 4, resume=True)
    assert again.history == [] and again.step == 4
    assert again.metrics == first.metrics and "loss" in again.metrics


def test_a_checkpoint_between_two_log_steps_changes_no_logged_mean(tmp_path):
    def run(out, crash_at=None, resume=False):
        cfg = quiet_config(max_steps=6, log_every=2, checkpoint_every=3, keep_checkpoints=None, out_dir=out)
        return Trainer(RegressionTask(crash_at=crash_at), cfg).fit(resume=resume)

    run(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", crash_at=4)  # killed after the checkpoint at step 3, between the log steps 2 and 4
    run(tmp_path / "b", resume=True)
    assert read_jsonl(tmp_path / "b" / "metrics.jsonl") == read_jsonl(tmp_path / "a" / "metrics.jsonl")


def test_a_loss_refusing_non_finite_outputs_mid_run_is_reported_as_divergence_with_the_step():
    from divmin.divergences.kernels import NonFiniteInputError

    class Refusing(_PoisonedTask):
        def train_step(self, batch, ctx):
            if ctx.step == 2:
                raise NonFiniteInputError("`model_logits`: 1 counted row(s) hold a NaN or +inf logit")
            return super().train_step(batch, ctx)

    with pytest.raises(NonFiniteError, match=r"step 2: the model's outputs became non-finite \(`model_logits`"):
        Trainer(Refusing(), quiet_config(max_steps=4)).fit()
