"""The engine's per-step shortcuts give exactly what the general path gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from accelerate import Accelerator

from divmin.engine._context import _bare_optimizer
from divmin.engine._seeds import SeedTable, _derive_seed


def _numpy_seed(*parts: int) -> int:
    """The oracle: numpy's SeedSequence, as the engine always derived per-micro-batch seeds."""
    words = np.random.SeedSequence(list(parts)).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


@pytest.mark.parametrize("seed,process,micro_steps", [(0, 0, 1), (7, 3, 3), (2**32 - 1, 1, 2), (2**40, 0, 1)])
def test_seed_table_equals_seed_sequence(seed: int, process: int, micro_steps: int) -> None:
    table = SeedTable(seed, process, micro_steps)
    steps = [0, 1, 2, 255, 256, 257, 1000, 123_457, 2**32 - 2]
    for step in steps:
        for micro in range(micro_steps):
            assert table.get(step, micro) == _numpy_seed(seed, process, step, micro) == _derive_seed(
                seed, process, step, micro)


def test_bare_optimizer_only_without_scaler() -> None:
    acc = Accelerator(cpu=True)
    net = torch.nn.Linear(2, 1)
    opt = acc.prepare_optimizer(torch.optim.SGD(net.parameters(), lr=0.1))
    assert _bare_optimizer(opt, acc) is opt.optimizer
    opt.scaler = object()  # a grad scaler: the wrapper's step does real work
    assert _bare_optimizer(opt, acc) is opt
    plain = torch.optim.SGD(net.parameters(), lr=0.1)  # not wrapped: used as is
    assert _bare_optimizer(plain, acc) is plain
