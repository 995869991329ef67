"""engine.ema_update / ema_copy: the one EMA of the library, against a hand-computed average."""

import pytest
import torch
from torch import nn

from divmin.engine import ema_copy, ema_update


class _WithBuffer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 1)
        self.register_buffer("count", torch.zeros(3))


def test_ema_matches_hand_computed_average_and_copies_buffers():
    torch.manual_seed(0)
    model = _WithBuffer()
    ema = ema_copy(model)
    assert not any(p.requires_grad for p in ema.parameters()) and ema is not model
    w0 = model.lin.weight.detach().clone().double()
    expected = w0.clone()
    decay = 0.8
    for k in range(3):
        with torch.no_grad():
            model.lin.weight.add_(1.0 + k)
            model.count.fill_(float(k + 1))
        ema_update(ema, model, decay=decay)
        expected = decay * expected + (1 - decay) * model.lin.weight.detach().double()  # float64 oracle
    torch.testing.assert_close(ema.lin.weight.double(), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ema.count, torch.full((3,), 3.0))  # copied, not averaged
    assert not torch.equal(ema.lin.weight, model.lin.weight)


@pytest.mark.parametrize("decay", [-0.1, 1.5])
def test_ema_rejects_bad_decay(decay):
    m = nn.Linear(1, 1)
    with pytest.raises(ValueError, match="`decay`"):
        ema_update(ema_copy(m), m, decay=decay)


def test_ema_rejects_other_architecture():
    with pytest.raises(ValueError, match="same parameters"):
        ema_update(nn.Linear(2, 1), nn.Linear(3, 1), decay=0.5)
    with_buffer = nn.Linear(2, 1)
    with_buffer.register_buffer("b", torch.zeros(1))
    with pytest.raises(ValueError, match="same buffers"):
        ema_update(nn.Linear(2, 1), with_buffer, decay=0.5)
