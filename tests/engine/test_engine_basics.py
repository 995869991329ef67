"""Accumulation, clipping, LR schedules, config validation, logging outputs, precision, data sources."""

from __future__ import annotations

import math

import pytest
import torch
from engine_toys import RegressionTask, quiet_config, read_jsonl
from torch import nn

from divmin.engine import (
    EngineConfig,
    StepOutput,
    Trainer,
    available_schedules,
    lr_multiplier,
    register_schedule,
)


def _weights(trainer):
    return torch.cat([p.detach().flatten() for p in trainer.models["net"].parameters()])


# ------------------------------------------------------------ accumulation
def test_accumulating_two_half_batches_equals_one_full_batch():
    def run(batch, accum):
        trainer = Trainer(
            RegressionTask(batch_size=batch, stochastic=False, optimizer="sgd", lr=0.05),
            quiet_config(max_steps=10, grad_accum_steps=accum, max_grad_norm=0.5),
        )
        return trainer.fit(), _weights(trainer)

    acc_res, acc_w = run(4, 2)
    big_res, big_w = run(8, 1)
    small_res, small_w = run(4, 1)
    torch.testing.assert_close(acc_w, big_w, atol=1e-5, rtol=1e-5)
    for a, b in zip(acc_res.history, big_res.history):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], abs=1e-5)
    # Control: half the batch without accumulation really is a different run.
    assert not torch.allclose(small_w, big_w, atol=1e-4)


# ---------------------------------------------------------------- clipping
class _LinearLoss:
    """loss = w . x with x fixed: grad = x, norm 10 (3-4-5 triangle scaled)."""

    def models(self):
        net = nn.Linear(2, 1, bias=False)
        nn.init.zeros_(net.weight)
        return {"net": net}

    def optimizers(self, models):
        return {"opt": torch.optim.SGD(models["net"].parameters(), lr=0.5)}

    def train_step(self, batch, ctx):
        return ctx.models["net"](torch.tensor([[6.0, 8.0]], device=ctx.device)).sum()


@pytest.mark.parametrize(("max_norm", "expected_move"), [(1.0, 0.5 * 1.0), (None, 0.5 * 10.0)])
def test_clipping_bounds_the_update_and_logs_the_raw_norm(max_norm, expected_move):
    trainer = Trainer(_LinearLoss(), quiet_config(max_steps=1, max_grad_norm=max_norm))
    result = trainer.fit()
    assert trainer.models["net"].weight.norm().item() == pytest.approx(expected_move, rel=1e-6)
    if max_norm is None:
        assert "grad_norm" not in result.metrics
    else:
        assert result.metrics["grad_norm"] == pytest.approx(10.0, rel=1e-6)


# ------------------------------------------------------------ LR schedules
def test_schedule_values():
    assert set(available_schedules()) >= {"constant", "linear", "cosine"}
    assert [lr_multiplier("constant", t, 4, 10) for t in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert [lr_multiplier("linear", t, 0, 4) for t in range(4)] == [1.0, 0.75, 0.5, 0.25]
    assert [lr_multiplier("linear", t, 2, 6) for t in range(6)] == [0.5, 1.0, 1.0, 0.75, 0.5, 0.25]
    cos = [lr_multiplier("cosine", t, 0, 4) for t in range(4)]
    assert cos == pytest.approx([1.0, (1 + math.cos(math.pi / 4)) / 2, 0.5, (1 + math.cos(3 * math.pi / 4)) / 2])


def test_logged_lr_follows_the_schedule():
    result = Trainer(
        RegressionTask(stochastic=False, lr=0.2), quiet_config(max_steps=8, lr_schedule="cosine", warmup_steps=3)
    ).fit()
    logged = [r["lr"] for r in result.history]
    expected = [0.2 * lr_multiplier("cosine", s, 3, 8) for s in range(8)]
    assert logged == pytest.approx(expected, rel=1e-12)
    assert logged[0] == pytest.approx(0.2 / 3) and logged[2] == pytest.approx(0.2)


def test_register_custom_schedule():
    name = "test_half_engine"
    if name not in available_schedules():
        register_schedule(name)(lambda step, warmup, total: 0.5)
    assert EngineConfig(lr_schedule=name).lr_schedule == name
    assert lr_multiplier(name, 3, 0, 10) == 0.5
    with pytest.raises(ValueError, match="already registered"):
        register_schedule(name)(lambda step, warmup, total: 1.0)


# ---------------------------------------------------------- config checks
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_steps", 0),
        ("max_steps", 2.5),
        ("seed", -1),
        ("mixed_precision", "fp8"),
        ("grad_accum_steps", 0),
        ("max_grad_norm", 0.0),
        ("max_grad_norm", "1"),
        ("lr_schedule", "exponential"),
        ("warmup_steps", -1),
        ("log_every", 0),
        ("eval_every", 0),
        ("checkpoint_every", 0),
        ("keep_checkpoints", 0),
        ("progress", "yes"),
        ("tensorboard", 1),
        ("cpu", None),
        ("out_dir", 3),
    ],
)
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=rf"^`{field}`"):
        EngineConfig(**{field: value})


def test_checkpoints_need_out_dir():
    with pytest.raises(ValueError, match="^`checkpoint_every` needs `out_dir`"):
        Trainer(RegressionTask(), EngineConfig(checkpoint_every=5))
    EngineConfig()  # the defaults are valid
    EngineConfig(checkpoint_every=5)  # out_dir may still come (a recipe's --out)


# ---------------------------------------------------------------- logging
def _on_a_terminal(monkeypatch):
    import divmin.engine._logging as logging_module

    monkeypatch.setattr(logging_module, "_terminal", lambda: True)  # capsys is no terminal: draw the bar anyway


def test_metrics_jsonl_tensorboard_and_progress(tmp_path, capsys, monkeypatch):
    _on_a_terminal(monkeypatch)
    config = quiet_config(max_steps=10, log_every=3, eval_every=5, out_dir=tmp_path, tensorboard=True, progress=True)
    result = Trainer(RegressionTask(), config).fit()
    assert [r["step"] for r in result.history] == [3, 5, 6, 9, 10]
    assert "loss" not in result.history[1] and "eval/mse" in result.history[1]  # step 5: eval only
    assert read_jsonl(tmp_path / "metrics.jsonl") == result.history
    err = capsys.readouterr().err
    assert "10/10" in err and "loss=" in err  # tqdm bar with the live loss

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    loss = acc.Scalars("loss")
    assert [e.step for e in loss] == [3, 6, 9, 10]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in result.history if "loss" in r], rel=1e-6)
    assert [e.step for e in acc.Scalars("eval/mse")] == [5, 10]


class _StepIndexTask:
    """Logs the engine step and micro-batch of every call: the oracle for interval means."""

    def models(self):
        return {"net": nn.Linear(1, 1)}

    def optimizers(self, models):
        return {"opt": torch.optim.SGD(models["net"].parameters(), lr=0.1)}

    def train_step(self, batch, ctx):
        loss = ctx.models["net"].weight.sum() * 0.0
        return StepOutput(loss=loss, metrics={"idx": torch.tensor(float(ctx.step)), "micro": float(ctx.micro_step)})


def test_logged_metrics_are_means_since_the_last_log_and_lr_is_current():
    config = quiet_config(max_steps=8, log_every=3, grad_accum_steps=2, lr_schedule="linear")
    result = Trainer(_StepIndexTask(), config).fit()
    assert [r["step"] for r in result.history] == [3, 6, 8]
    # steps 0-2, 3-5 and 6-7, two micro-batches each
    assert [r["idx"] for r in result.history] == pytest.approx([1.0, 4.0, 6.5])
    assert [r["micro"] for r in result.history] == pytest.approx([0.5, 0.5, 0.5])
    lrs = [0.1 * lr_multiplier("linear", s - 1, 0, 8) for s in (3, 6, 8)]  # the rate of the logged step
    assert [r["lr"] for r in result.history] == pytest.approx(lrs)


def test_no_out_dir_writes_no_files(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    result = Trainer(RegressionTask(), quiet_config(max_steps=3, tensorboard=True, progress=False)).fit()
    assert list(tmp_path.iterdir()) == [] and result.out_dir is None
    assert "step 3/3" in capsys.readouterr().out  # console line


def test_off_a_terminal_progress_is_one_short_line_per_logged_step(capsys):
    """Written to a file or a pipe, tqdm's redraws would pile up into lines of hundreds of characters."""
    Trainer(RegressionTask(), quiet_config(max_steps=30, log_every=10, progress=True)).fit()
    out, err = capsys.readouterr()
    assert "\r" not in err and "it/s" not in err  # no bar
    lines = out.splitlines()
    assert [line.split(" | ")[0] for line in lines] == ["step 10/30", "step 20/30", "step 30/30"]
    assert max(map(len, lines)) < 120


def test_label_names_the_run_on_the_bar_and_the_console_lines(capsys, monkeypatch):
    _on_a_terminal(monkeypatch)
    Trainer(RegressionTask(), quiet_config(max_steps=2, log_every=1, progress=False, label="ridge, seed 3")).fit()
    out = capsys.readouterr().out.splitlines()
    assert [line.split(" | ")[:2] for line in out] == [["ridge, seed 3", "step 1/2"], ["ridge, seed 3", "step 2/2"]]
    Trainer(RegressionTask(), quiet_config(max_steps=2, log_every=2, progress=True, label="ridge, seed 3")).fit()
    assert "ridge, seed 3: 100%" in capsys.readouterr().err  # tqdm's description
    with pytest.raises(ValueError, match="label"):
        quiet_config(label=3)


# --------------------------------------------------------------- precision
def test_bf16_autocasts_forwards_then_fp32_works_again():
    task = RegressionTask(stochastic=False)
    dtypes = []
    original = task.models

    def models():
        out = original()
        out["net"][0].register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
        return out

    task.models = models
    result = Trainer(task, quiet_config(max_steps=2, mixed_precision="bf16")).fit()
    assert dtypes and all(d == torch.bfloat16 for d in dtypes)
    assert math.isfinite(result.metrics["loss"])
    dtypes.clear()
    Trainer(task, quiet_config(max_steps=1, mixed_precision="no")).fit()
    assert dtypes == [torch.float32]


# ------------------------------------------------------------ data sources
class _ListSource(RegressionTask):
    """Batches from a plain re-iterable list (not a DataLoader), 5 per epoch."""

    def batches(self, ctx):
        g = torch.Generator().manual_seed(7)
        return [(torch.randn(4, 5, generator=g), torch.randn(4, 1, generator=g)) for _ in range(5)]

    def train_step(self, batch, ctx):
        out = super().train_step(batch, ctx)
        return StepOutput(out.loss, {**out.metrics, "x0": batch[0][0, 0]})


def test_plain_iterable_is_reiterated_and_fast_forwarded_on_resume(tmp_path):
    full = Trainer(_ListSource(), quiet_config(max_steps=12)).fit()
    xs = [r["x0"] for r in full.history]
    assert xs[:5] == xs[5:10] and xs[10:] == xs[:2]  # epochs repeat the list
    cfg = quiet_config(max_steps=12, checkpoint_every=7, out_dir=tmp_path)
    with pytest.raises(KeyboardInterrupt):
        Trainer(_ListSource(crash_at=8), cfg).fit()
    resumed = Trainer(_ListSource(), cfg).fit(resume=True)
    assert resumed.history == full.history[7:]


class _OneShot(RegressionTask):
    def batches(self, ctx):
        return iter([(torch.zeros(2, 5), torch.zeros(2, 1))] * 3)


def test_exhausted_iterator_raises():
    with pytest.raises(RuntimeError, match="exhausted"):
        Trainer(_OneShot(stochastic=False), quiet_config(max_steps=4)).fit()


def test_task_without_required_methods_is_rejected():
    with pytest.raises(TypeError, match="train_step"):
        Trainer(object.__new__(type("NoStep", (), {"models": lambda s: {}, "optimizers": lambda s, m: {}})))
