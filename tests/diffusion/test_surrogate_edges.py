"""f-distill's weights at the numerical edges: normalised in log space, empty and negative inputs refused."""

from __future__ import annotations

import math

import pytest
import torch

from divmin import divergence
from divmin.diffusion import fdistill_surrogate, fdistill_weight


@pytest.mark.parametrize("name, extreme", [("forward_kl", 100.0), ("pearson_chi2", 100.0), ("jeffreys", 100.0),
                                           ("softened_forward_kl", 100.0), ("neyman_chi2", -100.0)])
def test_normalised_weights_stay_finite_where_h_overflows(name, extreme):
    log_r = torch.tensor([extreme, 0.0, 1.0])
    w = fdistill_weight(log_r, divergence=name)
    assert torch.isfinite(w).all()
    # oracle: the same normalisation in float64 at a log-ratio float64 still holds
    h = divergence(name).h(log_r.double())
    torch.testing.assert_close(w.double(), h / h.mean(), rtol=1e-5, atol=1e-30)
    x = torch.zeros(3, 2, requires_grad=True)
    fdistill_surrogate(x, torch.ones(3, 2), torch.zeros(3, 2), log_r, divergence=name).backward()
    assert torch.isfinite(x.grad).all() and x.grad[0, 0] == pytest.approx(1.0, rel=1e-4)


def test_weights_all_zero_stay_zero_not_nan():
    w = fdistill_weight(torch.tensor([-200.0, -300.0]), divergence="js")  # h = sigmoid(log r) underflows
    assert torch.equal(w, torch.zeros(2)) or torch.isfinite(w).all()


def test_empty_batch_and_negative_time_weight_are_refused():
    with pytest.raises(ValueError, match="`x_t` holds no sample"):
        fdistill_surrogate(torch.zeros(0, 2), torch.zeros(0, 2), torch.zeros(0, 2), torch.zeros(0), divergence="js")
    x = torch.zeros(2, 2, requires_grad=True)
    for bad in (torch.tensor([1.0, -1.0]), torch.tensor([1.0, math.nan])):
        with pytest.raises(ValueError, match="`time_weight` must be finite and >= 0"):
            fdistill_surrogate(x, x.detach(), x.detach(), torch.zeros(2), divergence="js", time_weight=bad)
