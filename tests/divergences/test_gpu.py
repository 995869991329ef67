"""CUDA agrees with CPU (skipped without a GPU)."""

from __future__ import annotations

import math

import pytest
import torch

import divmin

from .conftest import members

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@members
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_matches_cpu_in_value_and_gradient(div, dtype):
    g = torch.Generator().manual_seed(0)
    a = (3 * torch.randn(64, 1000, generator=g)).to(dtype)
    b = (3 * torch.randn(64, 1000, generator=g)).to(dtype)
    a[:, 990:] = -math.inf
    b[:, 990:] = -math.inf
    out = {}
    for device in ("cpu", "cuda"):
        bb = b.detach().to(device).clone().requires_grad_()
        loss = divmin.categorical_divergence(bb, a.to(device), divergence=div, chunk_size=16, temperature=1.5)
        loss.backward()
        out[device] = (loss.detach().cpu(), bb.grad.float().cpu())
    torch.testing.assert_close(out["cuda"][0], out["cpu"][0], rtol=1e-4, atol=1e-5)
    # gradients are returned in the input dtype: allow one bf16 ulp of rounding difference
    rtol = 1e-3 if dtype == torch.float32 else 1.6e-2
    torch.testing.assert_close(out["cuda"][1], out["cpu"][1], rtol=rtol, atol=1e-5)
