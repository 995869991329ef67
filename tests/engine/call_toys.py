"""Tasks for the ``ctx.call`` tests: gradients from a method, a ModuleDict entry and a bare parameter."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from divmin.engine import StepContext, StepOutput
from engine_toys import regression_data


class Bag(nn.Module):
    """Two heads in a ModuleDict, a bare scale parameter and a non-forward method."""

    def __init__(self) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({"a": nn.Linear(5, 1), "b": nn.Linear(5, 1)})
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # what the methods below call back into
        return self.heads["a"](x)

    def blended(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * (self(x) + self.heads["b"](x))


class CallTask:
    """Regression through ``ctx.call`` in three ways (or, with ``bypass``, through ``ctx.unwrap``: wrong under DDP)."""

    def __init__(self, batch_size: int, bypass: bool = False) -> None:
        self.batch_size, self.bypass = batch_size, bypass

    def models(self) -> dict[str, nn.Module]:
        return {"bag": Bag()}

    def optimizers(self, models: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        return {"opt": torch.optim.Adam(models["bag"].parameters(), lr=1e-2)}

    def batches(self, ctx: StepContext) -> DataLoader:
        return DataLoader(regression_data(), batch_size=self.batch_size, shuffle=True)

    def train_step(self, batch, ctx: StepContext) -> StepOutput:
        x, y = batch
        if self.bypass:
            pred = ctx.unwrap("bag").blended(x)
        else:
            pred = ctx.call("bag", "blended", x) + ctx.call("bag", lambda m, x: m.heads["b"](x) * m.scale, x)
        return StepOutput(loss=nn.functional.mse_loss(pred, y))
