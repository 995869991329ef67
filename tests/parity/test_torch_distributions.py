"""Parity with ``torch.distributions``: the categorical KL (``torch/distributions/kl.py``'s Categorical /
Categorical rule) and the cases of ``test/distributions/test_distributions.py::TestKL`` that concern it
(``test_kl_edgecases``: KL of a distribution with itself where it has zeros is 0; ``test_kl_infinite``:
mass where the other has none gives +inf; ``test_kl_shape``: batch shapes).

Argument order: ``kl_divergence(p, q)`` is ``KL(p || q)``; divmin's ``categorical_divergence(model, target)``
is ``D(target || model)``, so ``kl_divergence(Categorical(target), Categorical(model))`` is divmin's
``forward_kl`` and ``kl_divergence(Categorical(model), Categorical(target))`` its ``reverse_kl``.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Categorical, kl_divergence

from divmin import categorical_divergence

F64, F32 = torch.float64, torch.float32


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("batch", [(), (7,), (3, 4)], ids=str)
def test_categorical_kl_matches_torch_distributions(batch, dtype):
    """test_kl_shape's batch shapes; per-row values (reduction "none") in both directions."""
    g = torch.Generator().manual_seed(0)
    model = (3 * torch.randn(*batch, 11, generator=g)).to(dtype)
    target = (3 * torch.randn(*batch, 11, generator=g)).to(dtype)
    fwd = kl_divergence(Categorical(logits=target), Categorical(logits=model))
    rev = kl_divergence(Categorical(logits=model), Categorical(logits=target))
    m, t = model.reshape(-1, 11), target.reshape(-1, 11)
    ours_fwd = categorical_divergence(m, t, divergence="forward_kl", reduction="none").reshape(batch)
    ours_rev = categorical_divergence(m, t, divergence="reverse_kl", reduction="none").reshape(batch)
    torch.testing.assert_close(ours_fwd, fwd)
    torch.testing.assert_close(ours_rev, rev)


def test_kl_edgecases_zero_probabilities():
    """test_kl_edgecases: Categorical(probs=[0, 1]) against itself is 0 (no 0 log 0 NaN)."""
    logits = torch.log(torch.tensor([[0.0, 1.0]], dtype=F64))
    assert kl_divergence(Categorical(logits=logits[0]), Categorical(logits=logits[0])).item() == 0.0
    assert categorical_divergence(logits, logits, divergence="forward_kl").item() == 0.0
    assert categorical_divergence(logits, logits, divergence="reverse_kl").item() == 0.0


def test_kl_infinite():
    """test_kl_infinite: the target has mass where the model has none: forward KL is +inf, as torch's."""
    model = torch.log(torch.tensor([[0.0, 1.0]], dtype=F64))
    target = torch.log(torch.tensor([[0.5, 0.5]], dtype=F64))
    assert kl_divergence(Categorical(logits=target[0]), Categorical(logits=model[0])).item() == math.inf
    assert categorical_divergence(model, target, divergence="forward_kl").item() == math.inf
    # the other direction is finite: log 2
    assert categorical_divergence(model, target, divergence="reverse_kl").item() == pytest.approx(math.log(2))
