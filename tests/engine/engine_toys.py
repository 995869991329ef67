"""Toy tasks shared by the engine tests and the multi-process worker script."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from divmin.engine import StepContext, StepOutput


def regression_data(n: int = 64, d: int = 5) -> TensorDataset:
    """Fixed synthetic regression set, independent of the global RNG state."""
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(n, d, generator=g)
    w = torch.randn(d, 1, generator=g)
    y = x @ w + 0.1 * torch.randn(n, 1, generator=g)
    return TensorDataset(x, y)


class RegressionTask:
    """MLP regression on a shuffled DataLoader.

    With ``stochastic=True`` every RNG the engine must restore matters: dropout
    and a noise term (global torch RNG), a per-step-generator noise term, and
    tiny numpy / python-random loss factors; extra state (a running baseline
    and a call counter) feeds a logged metric.
    """

    def __init__(
        self,
        batch_size: int = 8,
        n: int = 64,
        stochastic: bool = True,
        lr: float = 1e-2,
        optimizer: str = "adam",
        crash_at: int | None = None,
        stop_at: int | None = None,
    ) -> None:
        self.batch_size, self.n, self.stochastic, self.lr = batch_size, n, stochastic, lr
        self.optimizer_name = optimizer
        self.crash_at, self.stop_at = crash_at, stop_at
        self.baseline = torch.zeros(())
        self.calls = 0
        self.seen: list[int] = []  # sum of x per micro-batch (data order witness)

    def models(self) -> dict[str, nn.Module]:
        p = 0.2 if self.stochastic else 0.0
        return {"net": nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Dropout(p), nn.Linear(16, 1))}

    def optimizers(self, models: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        params = models["net"].parameters()
        if self.optimizer_name == "sgd":
            return {"opt": torch.optim.SGD(params, lr=self.lr)}
        return {"opt": torch.optim.Adam(params, lr=self.lr)}

    def batches(self, ctx: StepContext) -> DataLoader:
        return DataLoader(regression_data(self.n), batch_size=self.batch_size, shuffle=True)

    def train_step(self, batch, ctx: StepContext) -> StepOutput:
        if self.crash_at is not None and ctx.step == self.crash_at:
            raise KeyboardInterrupt("simulated crash")
        if self.stop_at is not None and ctx.step + 1 == self.stop_at and ctx.sync_gradients:
            ctx.request_stop()
        x, y = batch
        pred = ctx.models["net"](x)
        loss = nn.functional.mse_loss(pred, y)
        metrics = {"mse": loss.detach()}
        if self.stochastic:
            loss = loss + 0.05 * (torch.randn_like(pred) * pred).mean()
            noise = torch.randn(pred.shape, generator=ctx.generator, device=pred.device)
            loss = loss + 0.05 * (noise * pred).mean()
            loss = loss * (1.0 + 1e-2 * float(np.random.rand()) + 1e-2 * random.random())
        self.calls += 1
        self.baseline = 0.9 * self.baseline + 0.1 * loss.detach().cpu()
        metrics["baseline"] = self.baseline.clone()
        metrics["calls"] = float(self.calls)
        return StepOutput(loss=loss, metrics=metrics)

    def evaluate(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        data = regression_data(self.n)
        with torch.no_grad():
            pred = ctx.models["net"](data.tensors[0].to(ctx.device))
        return {"mse": nn.functional.mse_loss(pred, data.tensors[1].to(ctx.device))}

    def state_dict(self) -> dict:
        # Mixed structure on purpose: tensor, int, tuple, int-keyed dict.
        return {"baseline": self.baseline, "calls": self.calls, "meta": (1, "x"), "by_id": {3: 4.5}}

    def load_state_dict(self, state: dict) -> None:
        assert state["meta"] == (1, "x") and state["by_id"] == {3: 4.5}
        self.baseline = state["baseline"]
        self.calls = state["calls"]


class CountingSGD(torch.optim.SGD):
    """SGD that counts its real ``step()`` calls."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls = 0

    def step(self, closure=None):
        self.calls += 1
        return super().step(closure)


class AdversarialTask:
    """Generator/critic toy without a dataset (samples every step, f-DPG style).

    The critic is updated ``critic_steps`` times per engine step; the
    generator every ``gen_every`` steps; an EMA copy of the generator (frozen
    but changing) and a running normaliser estimate ``log_z`` are state that
    checkpoints must carry.
    """

    def __init__(self, critic_steps: int = 3, gen_every: int = 1, batch: int = 16) -> None:
        self.critic_steps, self.gen_every, self.batch = critic_steps, gen_every, batch
        self.log_z = torch.zeros(())
        self.opts: dict[str, CountingSGD] = {}

    def models(self) -> dict[str, nn.Module]:
        ema = nn.Linear(2, 2)
        ema.requires_grad_(False)
        return {"generator": nn.Linear(2, 2), "critic": nn.Linear(2, 1), "ema": ema}

    def optimizers(self, models):
        self.opts = {
            "generator": CountingSGD(models["generator"].parameters(), lr=0.05),
            "critic": CountingSGD(models["critic"].parameters(), lr=0.05),
        }
        return dict(self.opts)

    def _real(self, ctx: StepContext) -> torch.Tensor:
        return torch.randn(self.batch, 2, generator=ctx.generator, device=ctx.device) + 3.0

    def _fake(self, ctx: StepContext) -> torch.Tensor:
        z = torch.randn(self.batch, 2, generator=ctx.generator, device=ctx.device)
        return ctx.models["generator"](z)

    def train_step(self, batch, ctx: StepContext) -> StepOutput:
        assert batch is None
        critic = ctx.models["critic"]
        for _ in range(self.critic_steps):
            with torch.no_grad():
                fake = self._fake(ctx)
            c_loss = critic(fake).mean() - critic(self._real(ctx)).mean()
            ctx.update("critic", c_loss)
        metrics = {"critic_loss": c_loss.detach()}
        if ctx.step % self.gen_every == self.gen_every - 1:
            with ctx.frozen("critic"):
                g_loss = -ctx.unwrap("critic")(self._fake(ctx)).mean()
            ctx.update("generator", g_loss)
            metrics["gen_loss"] = g_loss.detach()
            with torch.no_grad():
                for pe, pg in zip(ctx.models["ema"].parameters(), ctx.unwrap("generator").parameters()):
                    pe.lerp_(pg, 0.5)
        self.log_z = 0.5 * self.log_z + 0.5 * c_loss.detach().cpu()
        metrics["log_z"] = self.log_z.clone()
        return StepOutput(loss=None, metrics=metrics)

    def state_dict(self) -> dict:
        return {"log_z": self.log_z}

    def load_state_dict(self, state: dict) -> None:
        self.log_z = state["log_z"]


def quiet_config(**overrides):
    """EngineConfig for tests: CPU, no progress bar, no TensorBoard, log every step."""
    from divmin.engine import EngineConfig

    base = dict(max_steps=10, log_every=1, progress=False, tensorboard=False, cpu=True)
    base.update(overrides)
    return EngineConfig(**base)


def read_jsonl(path) -> list[dict]:
    import json

    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]
