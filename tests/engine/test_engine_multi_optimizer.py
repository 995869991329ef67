"""Several optimizers updated by the step itself via ctx.update, at different rates."""

from __future__ import annotations

import pytest
import torch
from engine_toys import AdversarialTask, RegressionTask, quiet_config

from divmin.engine import StepOutput, Trainer


def _snapshot(task_models):
    return {n: [p.detach().clone() for p in m.parameters()] for n, m in task_models.items()}


def _moved(before, model):
    return any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_critic_three_times_per_generator_step():
    task = AdversarialTask(critic_steps=3, gen_every=1)
    trainer = Trainer(task, quiet_config(max_steps=6))
    result = trainer.fit()
    assert task.opts["critic"].calls == 18 and task.opts["generator"].calls == 6
    assert result.optimizer_steps == {"generator": 6, "critic": 18}
    keys = set(result.history[-1])
    assert {"lr/critic", "lr/generator", "grad_norm/critic", "grad_norm/generator", "log_z"} <= keys


def test_generator_gated_on_step_index_and_all_models_move():
    task = AdversarialTask(critic_steps=1, gen_every=3)
    trainer = Trainer(task, quiet_config(max_steps=9))
    result = trainer.fit()
    assert result.optimizer_steps == {"generator": 3, "critic": 9}
    assert task.opts["generator"].calls == 3
    gen_logged = [r["step"] for r in result.history if "gen_loss" in r]
    assert gen_logged == [3, 6, 9]
    # The engine seeds before models(), so a fresh build reproduces the initial weights.
    torch.manual_seed(0)
    fresh = _snapshot(AdversarialTask().models())
    for name in ("generator", "critic", "ema"):
        assert _moved(fresh[name], trainer.models[name]), name
    assert not any(p.requires_grad for p in trainer.models["ema"].parameters())
    assert all(p.requires_grad for p in trainer.models["critic"].parameters())  # frozen() restored


def test_repeated_update_with_accumulation_is_refused():
    with pytest.raises(RuntimeError, match="twice in one micro-batch"):
        Trainer(AdversarialTask(critic_steps=2), quiet_config(max_steps=1, grad_accum_steps=2)).fit()


def test_update_with_accumulation_steps_once_per_engine_step():
    task = AdversarialTask(critic_steps=1, gen_every=1)
    result = Trainer(task, quiet_config(max_steps=4, grad_accum_steps=3)).fit()
    assert task.opts["critic"].calls == 4 and task.opts["generator"].calls == 4
    assert result.optimizer_steps == {"generator": 4, "critic": 4}


class _Both(RegressionTask):
    def train_step(self, batch, ctx):
        out = super().train_step(batch, ctx)
        ctx.update("opt", out.loss)
        return StepOutput(loss=out.loss.detach().requires_grad_(), metrics=out.metrics)


def test_returning_a_loss_after_ctx_update_is_refused():
    with pytest.raises(RuntimeError, match="return loss=None"):
        Trainer(_Both(), quiet_config(max_steps=1)).fit()


class _TwoOptimizersOneLoss(RegressionTask):
    """A returned loss steps every optimizer (here: one per layer)."""

    def optimizers(self, models):
        net = models["net"]
        return {
            "first": torch.optim.SGD(net[0].parameters(), lr=0.1),
            "last": torch.optim.SGD(net[3].parameters(), lr=0.1),
        }


def test_returned_loss_steps_all_optimizers_with_joint_clipping():
    task = _TwoOptimizersOneLoss(stochastic=False)
    trainer = Trainer(task, quiet_config(max_steps=1, max_grad_norm=1e-3))
    result = trainer.fit()
    assert result.optimizer_steps == {"first": 1, "last": 1}
    assert result.history[-1]["grad_norm"] > 1e-2  # so clipping was active
    torch.manual_seed(0)  # the engine seeds with EngineConfig.seed=0 before models()
    init = task.models()["net"]
    delta = torch.cat([(a - b).flatten() for a, b in zip(trainer.models["net"].parameters(), init.parameters())])
    # One global norm over both optimizers' params: |delta| = lr * max_norm
    # (clipping each optimizer separately would give sqrt(2) times that).
    assert delta.norm().item() == pytest.approx(0.1 * 1e-3, rel=1e-4)
