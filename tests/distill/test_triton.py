"""The Triton backend of fused_linear_kd_loss equals the torch backend, for every member.

Without a GPU the kernel runs under Triton's interpreter (TRITON_INTERPRET=1, set
before the kernel module is imported), and a separate process compiles it for
sm_90 / sm_80 to catch what the interpreter forgives (types, constexpr calls).
The oracle is the float64 torch path, itself tested against token_kd_loss and
categorical_divergence.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

triton = pytest.importorskip("triton")  # tests/conftest.py sets TRITON_INTERPRET=1 on machines without CUDA

import divmin  # noqa: E402
from divmin.distill import fused_linear_kd_loss  # noqa: E402
from divmin.distill._triton import triton_block_size, triton_rows, triton_terms  # noqa: E402
from divmin.distill._triton_terms import TRITON_TERMS  # noqa: E402

from ..divergences.conftest import MEMBERS, members  # noqa: E402

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


def test_every_registry_member_has_triton_terms():
    missing = [str(d) for d in MEMBERS if triton_terms(d) is None]
    assert not missing, f"members without Triton terms: {missing}"
    assert set(TRITON_TERMS) == {type(d) for d in MEMBERS}


@members
def test_triton_equals_torch_for_every_member(div):
    _compare(div, temperature=1.3, chunk_size=4)


@pytest.mark.parametrize("policy,v,vt", [("truncate", 37, 45), ("pad", 45, 37), ("pad", 37, 45)])
@pytest.mark.parametrize("name", ["forward_kl", "reverse_kl", "js", "total_variation", "jeffreys"])
def test_vocab_policies_num_items_and_infinite_losses(name, policy, v, vt):
    # "pad" gives one side zero mass on the extra ids: members that must be infinite are
    _compare(name, problem=_problem(v=v, vt=vt), vocab_policy=policy, num_items=11, chunk_size=8)


def test_several_column_blocks_and_bf16():
    big = _problem(n=(4,), v=3 * triton_block_size(100) + 5, vt=3 * triton_block_size(100) + 5, seed=3)
    _compare("generalized_js", problem=big, chunk_size=3)  # several blocks per row, a partial last block
    _compare("js", problem=big, dtype=torch.bfloat16, rtol=3e-2)


def _rows_reference(div, zs, zt, wts, temperature, dtype):
    zs = zs.to(dtype).requires_grad_()
    per_row = divmin.categorical_divergence(zt.to(dtype) / temperature, zs / temperature, div, reduction="none")
    loss = (torch.where(wts > 0, per_row, 0.0) * wts.to(dtype)).sum()
    (grad,) = torch.autograd.grad(loss, zs)
    return loss.detach().double(), torch.nan_to_num(grad.double(), nan=0.0)  # the ignored row is NaN under autograd


@pytest.mark.parametrize("name", ["forward_kl", "reverse_kl", "js", "squared_hellinger", "softened_forward_kl"])
def test_kernel_rows_with_minus_inf_and_extreme_logits(name):
    div = divmin.divergence(name)
    g = torch.Generator().manual_seed(7)
    zs = 30.0 * torch.randn(5, 300, generator=g)
    zt = 30.0 * torch.randn(5, 300, generator=g)
    zs[0, 10:200] = zt[0, 10:200] = -torch.inf  # both sides masked
    zs[1, :] = 1e4  # a constant row at a huge logit
    zs[2, 5] = zt[2, 5] = 2e4  # one dominant id on both sides
    wts = torch.tensor([0.2, 0.2, 0.2, 0.0, 0.4])
    zt[3, :] = -torch.inf  # an ignored row that is not even a distribution
    got_s = zs.clone().to(DEVICE)
    loss, grad = triton_rows(triton_terms(div), got_s, zt.to(DEVICE), wts.to(DEVICE), 0.7, True)
    loss, grad = loss.cpu().double(), grad.cpu().double()
    assert grad[3].abs().sum() == 0 and torch.isfinite(grad).all()
    # the torch path on the same float32 logits: the same arithmetic, so agreement is tight
    ref_loss, ref_grad = _rows_reference(div, zs, zt, wts, 0.7, torch.float32)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-3, atol=1e-4 * float(ref_grad.abs().max()))
    # float64: within float32's rounding of logits of size 1e4 (log-probabilities ~ -100)
    ref_loss, ref_grad = _rows_reference(div, zs, zt, wts, 0.7, F64)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-3, atol=1e-5)
    assert float((grad - ref_grad).abs().max()) < 2e-3 * float(ref_grad.abs().max())


def test_auto_backend_on_cpu_is_the_torch_path():
    hs, ws, ht, wt, labels = _problem()
    a = fused_linear_kd_loss(hs.float(), ws.float(), ht.float(), wt.float(), divergence="js", labels=labels)
    b = fused_linear_kd_loss(hs.float(), ws.float(), ht.float(), wt.float(), divergence="js", labels=labels,
                             backend="torch")
    assert torch.equal(a, b)


class _Custom(type(divmin.divergence("forward_kl"))):
    """A subclass that could change f: no Triton terms unless registered."""


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


_COMPILE = textwrap.dedent("""
    import os, sys
    os.environ["TRITON_INTERPRET"] = "0"
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, compile
    from divmin.distill._triton import kd_rows_kernel, triton_terms
    from divmin.distill._triton_terms import TRITON_TERMS
    import divmin
    fns = {}
    for d in [divmin.divergence(n) for n in divmin.available_divergences()] + [divmin.divergence("alpha", alpha=0.3)]:
        fns[triton_terms(d)[0].__name__] = triton_terms(d)[0]
    scalars = dict(s_stride="i64", t_stride="i64", n_s="i32", n_t="i32", n_cols="i32",
                   inv_temp="fp32", c0="fp32", c1="fp32", c2="fp32")
    jobs = [(fn, "bf16", True, 90) for fn in fns.values()]
    jobs += [(fns["mixture_terms"], "fp32", False, 90), (fns["mixture_terms"], "fp16", True, 80)]
    for fn, dt, grad, arch in jobs:
        sig = dict(s_ptr="*" + dt, t_ptr="*" + dt, w_ptr="*fp32", loss_ptr="*fp32", **scalars,
                   TERMS="constexpr", NEED_GRAD="constexpr", BLOCK="constexpr")
        src = ASTSource(fn=kd_rows_kernel, signature=sig, constexprs=dict(TERMS=fn, NEED_GRAD=grad, BLOCK=4096))
        out = compile(src, target=GPUTarget("cuda", arch, 32), options=dict(num_warps=16 if arch == 90 else 8))
        assert len(out.asm["cubin"]) > 0, fn.__name__
    print("compiled", len(jobs))
""")


@pytest.mark.slow
def test_kernel_compiles_for_gpus_for_every_member():
    """Ahead-of-time compilation to sm_90/sm_80 cubins; needs no GPU (Triton ships LLVM and ptxas)."""
    env = {**os.environ, "TRITON_DEFAULT_FP_FUSION": "1"}
    out = subprocess.run([sys.executable, "-c", _COMPILE], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "compiled" in out.stdout


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_auto_backend_on_cuda_uses_triton_and_matches():
    hs, ws, ht, wt, labels = _problem(n=(64,), v=5000, vt=5000)
    _compare("js", problem=(hs, ws, ht, wt, labels), chunk_size=16)
    f32 = [x.float().cuda() for x in (hs, ws, ht, wt)]
    torch.testing.assert_close(fused_linear_kd_loss(*f32, divergence="js"),
                               fused_linear_kd_loss(*f32, divergence="js", backend="triton"))
