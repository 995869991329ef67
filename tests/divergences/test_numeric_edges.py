"""Numerics at the edges of the registry: log h in closed form, numbers as arguments, overflow of power members."""

from __future__ import annotations

import math

import pytest
import torch

from divmin import available_divergences, categorical_divergence, divergence

F_MEMBERS = available_divergences("f")


@pytest.mark.parametrize("name", F_MEMBERS)
def test_log_h_is_the_log_of_h(name):
    d = divergence(name)
    s = torch.linspace(-30, 30, 121, dtype=torch.float64)
    log_h, h = d.log_h(s), d.h(s)
    finite = h > 0
    assert torch.equal(torch.isneginf(log_h), ~finite)  # log 0 = -inf exactly where h vanishes
    torch.testing.assert_close(log_h[finite], torch.log(h[finite]), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", F_MEMBERS)
def test_log_h_stays_finite_where_h_overflows_float32(name):
    d = divergence(name)
    s = torch.tensor([-100.0, 100.0])
    log_h = d.log_h(s)
    assert log_h.dtype == torch.float32 and not torch.isnan(log_h).any()
    if float(d.h(torch.tensor(0.5))) > 0:
        assert torch.isfinite(log_h).all() or name == "total_variation"


@pytest.mark.parametrize("name", F_MEMBERS)
def test_elementwise_methods_take_python_numbers(name):
    d = divergence(name)
    for method in (d.f, d.g, d.h, d.log_h):
        out = method(0.5)
        assert isinstance(out, torch.Tensor) and out.dim() == 0
        assert math.isclose(float(out), float(method(torch.tensor(0.5, dtype=torch.float64))), rel_tol=1e-12)
    with pytest.raises(TypeError, match="`log_r` must be a tensor or a real number"):
        d.f("0.5")
    with pytest.raises(TypeError, match="`log_r`"):
        d.f(True)


def _naive_float64(name, model, target):
    """D = sum_x Q f(P/Q) written out in float64, differentiated by autograd: the oracle."""
    m = model.double().detach().requires_grad_(True)
    t = target.double().detach().requires_grad_(True)
    logq, logp = m.log_softmax(-1), t.log_softmax(-1)
    value = (logq.exp() * divergence(name).f(logp - logq)).sum()
    value.backward()
    return value.detach(), m.grad, t.grad


@pytest.mark.parametrize("name", ["pearson_chi2", "neyman_chi2", "alpha:1.5", "alpha:-0.5"])
@pytest.mark.parametrize("scale", [60.0, 100.0])
def test_power_members_overflowing_float32_give_signed_infinities_never_nan(name, scale):
    model = torch.tensor([[scale, 0.0, -scale, 1.0]], requires_grad=True)
    target = torch.tensor([[-scale, 0.0, scale, 2.0]], requires_grad=True)
    value = categorical_divergence(model, target, divergence=name, reduction="sum")
    value.backward()
    ref_value, ref_gm, ref_gt = _naive_float64(name, model, target)
    assert float(value) == pytest.approx(float(ref_value.float()), rel=1e-4)  # inf when it does not fit float32
    for got, ref in ((model.grad, ref_gm.float()), (target.grad, ref_gt.float())):
        assert not torch.isnan(got).any()
        assert torch.equal(torch.isinf(got), torch.isinf(ref)) and torch.equal(got[torch.isinf(got)], ref[torch.isinf(ref)])
        torch.testing.assert_close(got[torch.isfinite(got)], ref[torch.isfinite(ref)], rtol=1e-4, atol=1e-5)


def test_beyond_float64_the_gradient_is_refused_by_name():
    model = torch.tensor([[400.0, 0.0, -400.0]], requires_grad=True)
    target = torch.tensor([[-400.0, 0.0, 400.0]])
    value = categorical_divergence(model, target, divergence="pearson_chi2")
    with pytest.raises(ValueError, match="gradient of pearson_chi2 overflows float64"):
        value.backward()
