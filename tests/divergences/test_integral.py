"""The registry kind "integral": members, their reward -g(r), and refusals that list the valid names."""

from __future__ import annotations

import pytest
import torch

from divmin.divergences import (IntegralF, IntegralForwardKL, IntegralReverseKL, as_divergence, available_divergences,
                                available_kinds, divergence)


def test_the_kind_and_its_members():
    assert "integral" in available_kinds()
    assert available_divergences("integral") == ["integral_f", "integral_forward_kl", "integral_reverse_kl"]
    assert isinstance(divergence("integral_reverse_kl"), IntegralReverseKL)
    assert isinstance(divergence("integral_forward_kl"), IntegralForwardKL)
    assert divergence("integral_f:js") == IntegralF(f="js")
    assert divergence(divergence("integral_f", f="alpha:0.5").spec) == IntegralF(f="alpha:0.5")


def test_rewards_are_minus_g_written_out():
    """Reverse KL: -g = log r - 1; forward KL: -g = r; JS: -g = -log(2 / (1 + r)), each written out here."""
    log_r = torch.linspace(-5, 5, 11, dtype=torch.float64)
    r = log_r.exp()
    assert torch.allclose(divergence("integral_reverse_kl").reward(log_r), log_r - 1)
    assert torch.allclose(divergence("integral_forward_kl").reward(log_r), r)
    assert torch.allclose(divergence("integral_f:js").reward(log_r), -torch.log(2 / (1 + r)))
    assert torch.allclose(divergence("integral_reverse_kl").integrand(log_r), -log_r)
    half = divergence("integral_reverse_kl").reward(torch.tensor([0.5], dtype=torch.bfloat16))
    assert half.dtype == torch.float32


def test_kinds_are_refused_with_the_valid_names():
    with pytest.raises(ValueError, match=r"`divergence`: js is of kind 'f'; this takes kind\(s\) \['integral'\] "
                                         r"\(integral members: integral_f, integral_forward_kl, integral_reverse_kl\)"):
        as_divergence("js", kinds=("integral",))
    with pytest.raises(ValueError, match="is of kind 'integral'"):
        as_divergence("integral_reverse_kl")  # f-only callers refuse it
    with pytest.raises(ValueError, match="`f`: .*sinkhorn.* is of kind 'optimal_transport'"):
        divergence("integral_f:sinkhorn")
    with pytest.raises(TypeError, match="`f` must be a registry name"):
        IntegralF(f=3)
    assert not divergence("integral_reverse_kl").supports("score_weight")
