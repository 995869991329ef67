"""The Triton backend of the fused KD loss equals its torch backend (float64 as the oracle).

Without a GPU the kernel runs in Triton's interpreter (tests/conftest.py); the
member-by-member terms are tested through categorical_divergence in
tests/divergences/test_triton.py, so a few members suffice here.
"""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")  # tests/conftest.py sets TRITON_INTERPRET=1 on machines without CUDA

import divmin  # noqa: E402
from divmin.distill import fused_linear_kd_loss  # noqa: E402
from divmin.divergences import kernels  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
F64 = torch.float64


def _randn(*shape, seed, scale=1.0):
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _problem(n=(3, 5), h=6, v=37, vt=37, seed=0):
    hs, ws = _randn(*n, h, seed=seed + 1), _randn(v, h, seed=seed + 2, scale=0.8)
    ht, wt = _randn(*n, h + 1, seed=seed + 3), _randn(vt, h + 1, seed=seed + 4, scale=0.8)
    g = torch.Generator().manual_seed(seed + 5)
    labels = torch.randint(0, v, n, generator=g)
    labels[torch.rand(n, generator=g) < 0.3] = -100
    return hs, ws, ht, wt, labels


def _loss_and_grads(backend, dtype, hs, ws, ht, wt, **kw):
    hs, ws = (x.detach().to(DEVICE, dtype).requires_grad_() for x in (hs, ws))
    ht, wt = (x.to(DEVICE, dtype) for x in (ht, wt))
    loss = fused_linear_kd_loss(hs, ws, ht, wt, backend=backend, **kw)
    if not torch.isfinite(loss):
        return loss.detach().cpu().double(), None, None
    loss.backward()
    return tuple(x.detach().cpu().double() for x in (loss, hs.grad, ws.grad))


def _compare(div, *, rtol=2e-4, dtype=torch.float32, problem=None, **kw):
    hs, ws, ht, wt, labels = problem or _problem()
    kw = dict(divergence=div, labels=labels.to(DEVICE), **kw)
    ref = _loss_and_grads("torch", F64, hs, ws, ht, wt, **kw)
    got = _loss_and_grads("triton", dtype, hs, ws, ht, wt, **kw)
    torch.testing.assert_close(got[0], ref[0], rtol=rtol, atol=1e-6, equal_nan=True)
    if ref[1] is None:  # infinite loss: the gradient is meaningless on both sides
        return
    scale = ref[1].abs().max() + ref[2].abs().max()
    for g, r in zip(got[1:], ref[1:]):
        torch.testing.assert_close(g, r, rtol=rtol, atol=rtol * float(scale))


@pytest.mark.parametrize("div", ["reverse_kl", "js", divmin.divergence("alpha", alpha=0.3), "pearson_chi2"], ids=str)
def test_triton_equals_torch(div):
    _compare(div, temperature=1.3, chunk_size=4)


@pytest.mark.parametrize("policy,v,vt", [("truncate", 37, 45), ("pad", 45, 37), ("pad", 37, 45)])
@pytest.mark.parametrize("name", ["forward_kl", "reverse_kl", "js", "total_variation", "jeffreys"])
def test_vocab_policies_num_items_and_infinite_losses(name, policy, v, vt):
    # "pad" gives one side zero mass on the extra ids: members that must be infinite are
    _compare(name, problem=_problem(v=v, vt=vt), vocab_policy=policy, num_items=11, chunk_size=8)


def test_several_column_blocks_and_bf16(monkeypatch):
    monkeypatch.setattr(kernels, "MAX_BLOCK", 128)  # 389 columns: 4 blocks, the last one partial
    assert kernels.triton_block_size(389) == 128
    big = _problem(n=(4,), v=389, vt=389, seed=3)
    _compare("generalized_js", problem=big, chunk_size=3)  # several blocks per row, a partial last block
    _compare("js", problem=big, dtype=torch.bfloat16, rtol=3e-2)


def test_auto_backend_on_cpu_is_the_torch_path():
    hs, ws, ht, wt, labels = _problem()
    a = fused_linear_kd_loss(hs.float(), ws.float(), ht.float(), wt.float(), divergence="js", labels=labels)
    b = fused_linear_kd_loss(hs.float(), ws.float(), ht.float(), wt.float(), divergence="js", labels=labels,
                             backend="torch")
    assert torch.equal(a, b)


class _Custom(type(divmin.divergence("forward_kl"))):
    """A subclass that changes f (to Jeffreys'): no Triton terms unless it writes its own."""

    def f(self, log_r):
        return torch.expm1(log_r) * log_r

    def g(self, log_r):
        return -torch.expm1(log_r) - log_r

    def perspective(self):
        return self


def test_backend_errors(monkeypatch):
    hs, ws, ht, wt, _ = _problem()
    with pytest.raises(ValueError, match="backend"):
        fused_linear_kd_loss(hs, ws, ht, wt, backend="cuda")
    with pytest.raises(ValueError, match="float64"):
        fused_linear_kd_loss(hs.to(DEVICE), ws.to(DEVICE), ht.to(DEVICE), wt.to(DEVICE), backend="triton")
    f32 = [x.float().to(DEVICE) for x in (hs, ws, ht, wt)]
    with pytest.raises(ValueError, match="no terms"):
        fused_linear_kd_loss(*f32, divergence=_Custom(), backend="triton")
    # the custom member still works with "auto", on the torch path
    assert torch.isfinite(fused_linear_kd_loss(*f32, divergence=_Custom()))
    if DEVICE == "cpu":
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        with pytest.raises(ValueError, match="CUDA"):
            fused_linear_kd_loss(*f32, backend="triton")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_auto_backend_on_cuda_uses_triton_and_matches():
    hs, ws, ht, wt, labels = _problem(n=(64,), v=5000, vt=5000)
    _compare("js", problem=(hs, ws, ht, wt, labels), chunk_size=16)
    f32 = [x.float().cuda() for x in (hs, ws, ht, wt)]
    torch.testing.assert_close(fused_linear_kd_loss(*f32, divergence="js"),
                               fused_linear_kd_loss(*f32, divergence="js", backend="triton"))
