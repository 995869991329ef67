"""``StepContext.call``: gradients from methods, submodules and parameters reach every DDP process."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from call_toys import Bag, CallTask
from engine_toys import quiet_config
from safetensors.torch import load_file
from torch import nn

from divmin.engine import Trainer
from divmin.engine._context import StepContext
from tests._torchrun import torchrun

WORKER = Path(__file__).resolve().parent / "ddp_call_worker.py"
STEPS, BATCH_PER_PROCESS = 6, 8


class _FakeWrapper(nn.Module):
    """Stands in for DDP: its forward calls ``self.module(...)`` and counts the calls."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module, self.calls = module, 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        return self.module(*args, **kwargs)


class _Acc:
    """The two Accelerator members ``call`` uses."""

    def unwrap_model(self, model):
        return getattr(model, "module", model)

    def autocast(self):
        import contextlib

        return contextlib.nullcontext()


def _ctx(models):
    ctx = StepContext.__new__(StepContext)
    ctx.accelerator, ctx.models = _Acc(), models
    return ctx


def test_call_runs_through_the_wrapper_and_restores_forward():
    bag = Bag()
    wrapper = _FakeWrapper(bag)
    ctx = _ctx({"bag": wrapper})
    x = torch.randn(4, 5)
    expected = bag.scale * (bag.heads["a"](x) + bag.heads["b"](x))
    torch.testing.assert_close(ctx.call("bag", "blended", x), expected)  # blended calls self(x) inside
    torch.testing.assert_close(ctx.call("bag", lambda m, x: m.heads["b"](x), x), bag.heads["b"](x))
    assert ctx.call("bag", lambda m: m.scale) is bag.scale
    assert wrapper.calls == 3
    assert "forward" not in bag.__dict__  # the class's forward is back
    with pytest.raises(ZeroDivisionError):
        ctx.call("bag", lambda m: 1 / 0)
    assert "forward" not in bag.__dict__ and torch.equal(bag(x), bag.heads["a"](x))


def test_call_keeps_an_instance_forward_and_is_plain_without_wrapper():
    bag = Bag()
    patched = bag.forward
    bag.forward = patched  # as Accelerate's autocast wrapper does
    _ctx({"bag": _FakeWrapper(bag)}).call("bag", "blended", torch.randn(2, 5))
    assert bag.__dict__["forward"] is patched
    assert float(_ctx({"bag": bag}).call("bag", lambda m, k: m.scale * k, 3.0).detach()) == pytest.approx(3.0)


def test_single_process_training_through_call():
    result = Trainer(CallTask(16), quiet_config(max_steps=30)).fit()
    assert result.history[-1]["loss"] < 0.5 * result.history[0]["loss"]


@pytest.mark.slow
def test_two_processes_train_in_sync_and_a_bypass_is_refused(tmp_path):
    stdout = torchrun(WORKER, tmp_path, BATCH_PER_PROCESS, STEPS, timeout=240)
    verdicts = sorted(re.findall(r"rank=\d processes=\d bypass=(?:accepted|refused True|refused False)", stdout))
    assert verdicts == [f"rank={r} processes=2 bypass=refused True" for r in (0, 1)], stdout[-2000:]
    ranks = [load_file(tmp_path / f"bag_rank{r}.safetensors") for r in (0, 1)]
    # one process with the global batch (2 x 8, the same rows in the same order) is the oracle
    trainer = Trainer(CallTask(2 * BATCH_PER_PROCESS), quiet_config(max_steps=STEPS))
    trainer.fit()
    expected = trainer.models["bag"].state_dict()
    init = Bag().state_dict()
    for key, value in expected.items():
        torch.testing.assert_close(ranks[0][key], ranks[1][key], rtol=0, atol=0)
        torch.testing.assert_close(ranks[0][key], value, rtol=1e-5, atol=1e-6)
    assert any(not torch.allclose(init[k], expected[k]) for k in init)
