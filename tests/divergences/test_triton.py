"""The Triton kernel of categorical_divergence equals the torch closed form, for every member.

Without a GPU the kernel runs in Triton's interpreter (TRITON_INTERPRET=1, set by
tests/conftest.py before anything imports triton), and a separate process
compiles it for sm_90 / sm_80 to catch what the interpreter forgives (types,
constexpr calls). The oracle is the float64 torch path, itself tested against
enumeration, scipy and finite differences.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

triton = pytest.importorskip("triton")

import divmin  # noqa: E402
from divmin.divergences import kernels  # noqa: E402
from divmin.divergences._triton import triton_block_size, triton_rows  # noqa: E402

from .conftest import MEMBERS, members  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
F64 = torch.float64


def _logits(n=7, v=45, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    a, b = scale * torch.randn(n, v, generator=g, dtype=F64), scale * torch.randn(n, v, generator=g, dtype=F64)
    a[0, :5] = b[0, :5] = -torch.inf  # ids outside both supports
    a[1, 3] = -torch.inf  # P misses an id Q has: infinite for mode-seeking members
    mask = torch.ones(n, dtype=torch.bool)
    mask[4:5] = False  # row 4 (when there is one) does not count
    return a, b, mask


def _rows_and_grad(backend, a, b, mask, div, dtype=torch.float32, **kw):
    b = b.detach().to(DEVICE, dtype).requires_grad_()
    rows = divmin.categorical_divergence(b, a.to(DEVICE, dtype), divergence=div, mask=mask.to(DEVICE), reduction="none",
                                         backend=backend, **kw)
    weights = torch.linspace(0.5, 1.5, rows.numel(), device=DEVICE, dtype=rows.dtype)
    finite = torch.isfinite(rows)  # rows with an infinite loss have no meaningful gradient
    (torch.where(finite, rows, 0.0) * weights).sum().backward()
    return rows.detach().cpu().double(), b.grad.cpu().double(), finite.cpu()


def test_every_registry_member_has_triton_terms():
    missing = [str(d) for d in MEMBERS if not d.has_triton_terms or d.triton_terms() is None]
    assert not missing, f"members without Triton terms: {missing}"


@members
def test_triton_equals_torch_for_every_member(div):
    a, b, mask = _logits()
    ref, g_ref, finite = _rows_and_grad("torch", a, b, mask, div, dtype=F64, temperature=1.3)
    got, g_got, finite_got = _rows_and_grad("triton", a, b, mask, div, temperature=1.3)
    assert torch.equal(finite, finite_got)
    torch.testing.assert_close(got, ref, rtol=2e-4, atol=1e-6)  # inf rows equal as inf
    keep = finite[:, None].expand_as(g_ref)
    scale = float(g_ref[keep].abs().max())
    torch.testing.assert_close(g_got[keep], g_ref[keep], rtol=2e-4, atol=2e-4 * scale)
    assert (g_got[~keep] == 0).all() and (got[4] == 0)  # masked row 4: no loss, no gradient


@pytest.mark.parametrize("a", [1e-9, -1e-9, 1.0 - 1e-9, 1.0 + 1e-9, 1.0 - 1e-6])
def test_alpha_within_float32_rounding_of_0_and_1(a):
    # a GPU launch passes constants as float32 (the interpreter is given the same rounded values):
    # 1 - 1e-9 is then 1.0, and nothing in the kernel may form a - 1 from it
    div = divmin.divergence("alpha", alpha=a)
    x, y, mask = _logits()
    ref, g_ref, finite = _rows_and_grad("torch", x, y, mask, div, dtype=F64)
    got, g_got, finite_got = _rows_and_grad("triton", x, y, mask, div)
    assert torch.equal(finite, finite_got)
    torch.testing.assert_close(got, ref, rtol=2e-4, atol=1e-6)
    keep = finite[:, None].expand_as(g_ref)
    torch.testing.assert_close(g_got[keep], g_ref[keep], rtol=2e-4, atol=2e-4 * float(g_ref[keep].abs().max()))


@members
def test_rows_without_a_finite_logit_or_with_nan_are_refused_by_both_backends(div):
    x, y, _ = _logits(n=3)
    y[0] = -torch.inf  # the model has no finite logit
    x[1, 2] = torch.nan
    y[2, 7] = torch.nan
    with pytest.raises(ValueError, match="`target_logits`: 1 counted row"):
        divmin.categorical_divergence(y, x, divergence=div, reduction="none", backend="torch")
    with pytest.raises(ValueError, match="3 counted row"):
        divmin.categorical_divergence(y.float().to(DEVICE), x.float().to(DEVICE), divergence=div, reduction="none",
                                      backend="triton")
    mask = torch.tensor([False, False, False])  # rows left out may hold anything
    out = divmin.categorical_divergence(y.float().to(DEVICE), x.float().to(DEVICE), divergence=div,
                                        reduction="none", backend="triton", mask=mask.to(DEVICE))
    assert torch.equal(out.cpu(), torch.zeros(3))


def test_bf16_and_several_column_blocks(monkeypatch):
    monkeypatch.setattr(kernels, "MAX_BLOCK", 256)  # 3000 columns: 12 blocks, the last one partial
    assert triton_block_size(3000) == 256
    a, b, mask = _logits(n=6, v=3000, seed=1)
    for dtype, rtol in ((torch.float32, 2e-4), (torch.bfloat16, 3e-2)):
        a_d, b_d = a.to(dtype).double(), b.to(dtype).double()  # same rounded inputs for the oracle
        ref, g_ref, _ = _rows_and_grad("torch", a_d, b_d, mask, "js", dtype=F64)
        got, g_got, _ = _rows_and_grad("triton", a_d, b_d, mask, "js", dtype=dtype)
        torch.testing.assert_close(got, ref, rtol=rtol, atol=1e-5)
        torch.testing.assert_close(g_got, g_ref, rtol=rtol, atol=rtol * float(g_ref.abs().max()))


def _rows_reference(div, zs, zt, wts, temperature, dtype):
    zs = zs.to(dtype).requires_grad_()
    per_row = divmin.categorical_divergence(zs / temperature, zt.to(dtype) / temperature, divergence=div, reduction="none",
                                            backend="torch", mask=wts > 0)  # the ignored row is no distribution
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
    zs_dev = zs.to(DEVICE)
    grad = torch.empty_like(zs_dev)
    loss = triton_rows(div.triton_terms(), zs_dev, zt.to(DEVICE), wts.to(DEVICE), 0.7, grad_out=grad).sum()
    loss, grad = loss.cpu().double(), grad.cpu().double()
    assert grad[3].abs().sum() == 0 and torch.isfinite(grad).all()
    assert torch.equal(zs_dev.cpu(), zs)  # the logits are read, not written, when grad_out is another buffer
    # float64 is the oracle; float32 logits of size 1e4 leave log-probabilities ~ -100 with
    # rounding error ~1e-5, so the kernel must be as close to it as torch's own float32 path
    ref_loss, ref_grad = _rows_reference(div, zs, zt, wts, 0.7, F64)
    t32_loss, t32_grad = _rows_reference(div, zs, zt, wts, 0.7, torch.float32)
    assert abs(float(loss - ref_loss)) <= 1.5 * abs(float(t32_loss - ref_loss)) + 1e-6 * abs(float(ref_loss))
    err, err32 = float((grad - ref_grad).abs().max()), float((t32_grad - ref_grad).abs().max())
    assert err <= 1.5 * err32 + 1e-6 * float(ref_grad.abs().max())


class _Custom(divmin.divergences.ForwardKL):
    """A subclass that changes f (to Jeffreys'): the parent's kernel is not its kernel."""

    def f(self, log_r):
        return torch.expm1(log_r) * log_r

    def g(self, log_r):
        return -torch.expm1(log_r) - log_r

    def perspective(self):
        return self


class _Same(divmin.divergences.ForwardKL):
    """A subclass that leaves the math alone: it runs its parent's kernel."""


class _CustomWithKernel(_Custom):
    def triton_terms(self):
        from divmin.divergences._triton_terms import jeffreys_terms

        return divmin.divergences.TritonTerms(jeffreys_terms)


@pytest.mark.parametrize("cls, like", [(_Same, "forward_kl"), (_CustomWithKernel, "jeffreys")])
def test_a_subclass_runs_the_kernel_of_its_own_math(cls, like):
    a, b, mask = _logits()
    ref, g_ref, finite = _rows_and_grad("torch", a, b, mask, like, dtype=F64)
    got, g_got, _ = _rows_and_grad("triton", a, b, mask, cls())
    torch.testing.assert_close(got, ref, rtol=2e-4, atol=1e-6)
    keep = finite[:, None].expand_as(g_ref)
    torch.testing.assert_close(g_got[keep], g_ref[keep], rtol=2e-4, atol=2e-4 * float(g_ref[keep].abs().max()))


def test_a_subclass_that_changes_f_is_refused_by_triton_and_reported_once_by_auto():
    a, b, _ = _logits()
    with pytest.raises(ValueError, match="overrides f, g, perspective of ForwardKL"):
        divmin.categorical_divergence(b.float(), a.float(), divergence=_Custom(), backend="triton")

    class OnCuda(torch.Tensor):  # what "auto" decides on a CUDA tensor, without a GPU
        @property
        def is_cuda(self):
            return True

    x = torch.zeros(2, 3).as_subclass(OnCuda)
    kind = type("Fresh", (_Custom,), {})  # a class of its own: the report is once per class
    with pytest.warns(UserWarning, match="runs on the torch path") as record:
        assert kernels.triton_terms_for("auto", kind(), x) is None
        assert kernels.triton_terms_for("auto", kind(), x) is None
    assert len([w for w in record if "torch path" in str(w.message)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a member with terms: no report
        assert kernels.triton_terms_for("auto", _Same(), x) is not None


def test_backend_choice_and_errors(monkeypatch):
    a, b, _ = _logits()
    a32, b32 = a.float().to(DEVICE), b.float().to(DEVICE)
    with pytest.raises(ValueError, match="backend"):
        divmin.categorical_divergence(b32, a32, backend="cuda")
    with pytest.raises(ValueError, match="float64"):
        divmin.categorical_divergence(b.to(DEVICE), a.to(DEVICE), backend="triton")
    with pytest.raises(ValueError, match="no terms for forward_kl: _Custom overrides"):
        divmin.categorical_divergence(b32, a32, divergence=_Custom(), backend="triton")
    with pytest.raises(ValueError, match="target logits"):
        divmin.categorical_divergence(b32, a32.clone().requires_grad_(), backend="triton")
    # "auto" falls back to torch for all of these, and a target gradient then flows
    a_leaf = a32[2:].clone().requires_grad_()  # rows 0-1 hold ids one side misses: Jeffreys is infinite there
    divmin.categorical_divergence(b32[2:], a_leaf, divergence=_Custom()).backward()
    assert torch.isfinite(a_leaf.grad).all()
    if DEVICE == "cpu":
        auto = divmin.categorical_divergence(b32, a32, divergence="js")  # CPU: "auto" is the torch path
        assert torch.equal(auto, divmin.categorical_divergence(b32, a32, divergence="js", backend="torch"))
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        with pytest.raises(ValueError, match="CUDA"):
            divmin.categorical_divergence(b32, a32, backend="triton")


_WALKTHROUGH_CHECK = textwrap.dedent("""
    import os, re, sys
    os.environ["TRITON_INTERPRET"] = "1"
    page = open(sys.argv[1]).read()
    exec(compile("\\n\\n".join(re.findall(r"```python\\n(.*?)```", page, flags=re.S)), "family.md", "exec"))
    member = divmin.divergence("triangular")
    g = torch.Generator().manual_seed(0)
    model, target = torch.randn(5, 40, generator=g), torch.randn(5, 40, generator=g)
    model[0, :3] = -torch.inf  # ids the model misses, ids both miss, ids the target misses
    target[0, 2:6] = -torch.inf
    out = {}
    for backend in ("torch", "triton"):
        m = model.clone().requires_grad_()
        rows = divmin.categorical_divergence(m, target, divergence=member, reduction="none", backend=backend)
        rows.sum().backward()
        out[backend] = rows.detach().double(), m.grad.double()
    m = model.double().requires_grad_()
    q, p = m.softmax(-1), target.double().softmax(-1)
    ref = ((p - q) ** 2 / (p + q).clamp_min(1e-300)).sum(-1)  # the plain sum, float64
    ref.sum().backward()
    for rows, grad in out.values():
        torch.testing.assert_close(rows, ref.detach(), rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(grad, m.grad, rtol=1e-4, atol=1e-6)
    print("walkthrough ok")
""")


def test_the_adding_a_member_walkthrough_runs_its_triton_terms():
    """docs/family.md's example member, on both paths (the Triton one in the interpreter), against float64."""
    page = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "family.md")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, "-c", _WALKTHROUGH_CHECK, page], capture_output=True, text=True, env=env,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "walkthrough ok" in out.stdout


_COMPILE = textwrap.dedent("""
    import os
    os.environ["TRITON_INTERPRET"] = "0"
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, compile
    from divmin.divergences._triton import divergence_rows_kernel
    import divmin
    fns = {}
    for d in [divmin.divergence(n) for n in divmin.available_divergences("f")] + [divmin.divergence("alpha", alpha=0.3)]:
        fns[d.triton_terms().fn.__name__] = d.triton_terms().fn
    scalars = dict(s_stride="i64", t_stride="i64", g_stride="i64", n_s="i32", n_t="i32", n_cols="i32",
                   inv_temp="fp32", c0="fp32", c1="fp32", c2="fp32")
    jobs = [(fn, "bf16", True, 0, 90) for fn in fns.values()]  # the fused loss: one launch, gradient in place
    mix = fns["mixture_terms"]
    jobs += [(mix, "fp32", False, 1, 90), (mix, "fp32", True, 2, 90), (mix, "fp16", True, 0, 80)]  # fwd / bwd
    for fn, dt, grad, stats, arch in jobs:
        sig = dict(s_ptr="*" + dt, t_ptr="*" + dt, g_ptr="*" + dt, w_ptr="*fp32", loss_ptr="*fp32",
                   stats_ptr="*fp32", **scalars, TERMS="constexpr", NEED_GRAD="constexpr", STATS="constexpr",
                   BLOCK="constexpr")
        consts = dict(TERMS=fn, NEED_GRAD=grad, STATS=stats, BLOCK=4096)
        src = ASTSource(fn=divergence_rows_kernel, signature=sig, constexprs=consts)
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
@pytest.mark.parametrize("name", ["forward_kl", "js", "total_variation"])
def test_auto_backend_on_cuda_is_triton_and_matches_torch(name):
    a, b, mask = _logits(n=64, v=50000, seed=3)
    ref, g_ref, _ = _rows_and_grad("torch", a, b, mask, name)
    got, g_got, _ = _rows_and_grad("auto", a, b, mask, name)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(g_got, g_ref, rtol=1e-3, atol=1e-3 * float(g_ref.abs().max()))
