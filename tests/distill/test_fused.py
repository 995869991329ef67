"""fused_linear_kd_loss equals projecting to logits then token_kd_loss, in value and gradients."""

from __future__ import annotations

import pytest
import torch

from divmin.distill import default_chunk_size, fused_linear_cross_entropy, fused_linear_kd_loss, token_kd_loss

from ..divergences.conftest import members

F64 = torch.float64


def _randn(*shape, seed, scale=1.0, dtype=F64):
    return (scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)).to(dtype)


def _problem(n=(2, 7), h=5, ht=6, v=11, vt=11, dtype=F64):
    hs = _randn(*n, h, seed=1, dtype=dtype).requires_grad_()
    ws = _randn(v, h, seed=2, dtype=dtype).requires_grad_()
    hth = _randn(*n, ht, seed=3, dtype=dtype).requires_grad_()  # teacher leaves that must get no grad
    wt = _randn(vt, ht, seed=4, dtype=dtype).requires_grad_()
    g = torch.Generator().manual_seed(5)
    labels = torch.randint(0, v, n, generator=g)
    labels[torch.rand(n, generator=g) < 0.3] = -100
    return hs, ws, hth, wt, labels


def _compare(div, chunk, temperature=1.0, vocab_policy="truncate", num_items=None, **shape):
    hs, ws, ht, wt, labels = _problem(**shape)
    kw = dict(divergence=div, labels=labels, temperature=temperature, vocab_policy=vocab_policy, num_items=num_items)
    ref = token_kd_loss(hs @ ws.T, (ht @ wt.T).detach(), **kw)
    g_ref = torch.autograd.grad(ref, (hs, ws))
    fused = fused_linear_kd_loss(hs, ws, ht, wt, chunk_size=chunk, **kw)
    fused.backward()
    torch.testing.assert_close(fused, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(hs.grad, g_ref[0], rtol=1e-8, atol=1e-11)
    torch.testing.assert_close(ws.grad, g_ref[1], rtol=1e-8, atol=1e-11)
    assert ht.grad is None and wt.grad is None


@members
@pytest.mark.parametrize("chunk", [3, None])
def test_fused_equals_unfused_for_every_member(div, chunk):
    _compare(div, chunk, temperature=1.3)


@pytest.mark.parametrize("policy,v,vt", [("truncate", 11, 14), ("truncate", 14, 11), ("pad", 14, 11)])
def test_fused_vocab_mismatch_and_num_items(policy, v, vt):
    _compare("js", 4, vocab_policy=policy, v=v, vt=vt, num_items=9)


def test_fused_upstream_gradient_scales_and_bf16_stays_close():
    hs, ws, ht, wt, labels = _problem()
    (3.0 * fused_linear_kd_loss(hs, ws, ht, wt, divergence="reverse_kl", labels=labels, chunk_size=2)).backward()
    g_h, g_w = hs.grad.clone(), ws.grad.clone()
    hs.grad = ws.grad = None
    fused_linear_kd_loss(hs, ws, ht, wt, divergence="reverse_kl", labels=labels, chunk_size=2).backward()
    torch.testing.assert_close(g_h, 3.0 * hs.grad)
    torch.testing.assert_close(g_w, 3.0 * ws.grad)
    # bf16 inputs: float32 accumulation keeps the loss within bf16 rounding of the float64 value
    bf = [t.detach().to(torch.bfloat16) for t in (hs, ws, ht, wt)]
    bf[0].requires_grad_(), bf[1].requires_grad_()
    out = fused_linear_kd_loss(*bf, divergence="reverse_kl", labels=labels, chunk_size=4)
    assert out.dtype == torch.float32
    ref = fused_linear_kd_loss(hs.detach(), ws.detach(), ht, wt, divergence="reverse_kl", labels=labels)
    assert abs(float(out.detach()) - float(ref)) < 0.05 * abs(float(ref)) + 1e-3
    out.backward()
    assert bf[1].grad.dtype == torch.bfloat16 and torch.isfinite(bf[1].grad.float()).all()


def test_default_chunk_size_is_a_power_of_two_bounding_the_buffer():
    for v in (7, 1000, 32000, 128256, 10**8):
        c = default_chunk_size(v)
        assert c >= 1 and c & (c - 1) == 0
        assert c == 1 or c * v * 4 <= 32 * 2**20


@pytest.mark.parametrize("bad,err", [
    (dict(chunk_size=0), "chunk_size"), (dict(vocab_policy="x"), "vocab_policy"), (dict(temperature=-1.0), "temperature"),
])
def test_bad_arguments(bad, err):
    hs, ws, ht, wt, labels = _problem()
    with pytest.raises(ValueError, match=err):
        fused_linear_kd_loss(hs, ws, ht, wt, **bad)
    with pytest.raises(ValueError, match="student_head_weight"):
        fused_linear_kd_loss(hs, ws[:, :3], ht, wt)
    with pytest.raises(ValueError, match="teacher_hidden"):
        fused_linear_kd_loss(hs, ws, ht[:1], wt)


@pytest.mark.parametrize("chunk", [3, None])
@pytest.mark.parametrize("num_items", [None, 17])
def test_fused_cross_entropy_equals_cross_entropy(chunk, num_items):
    hs, ws, _, _, labels = _problem()
    ref = torch.nn.functional.cross_entropy((hs @ ws.T).flatten(0, 1), labels.flatten(), reduction="sum")
    ref = ref / (num_items or int((labels != -100).sum()))
    g_ref = torch.autograd.grad(ref, (hs, ws))
    got = fused_linear_cross_entropy(hs, ws, labels, num_items=num_items, chunk_size=chunk)
    got.backward()
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(hs.grad, g_ref[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ws.grad, g_ref[1], rtol=1e-10, atol=1e-12)


def test_fused_cross_entropy_bad_labels_and_all_ignored():
    hs, ws, _, _, labels = _problem()
    with pytest.raises(ValueError, match="labels"):
        fused_linear_cross_entropy(hs, ws, torch.full_like(labels, ws.shape[0]))
    with pytest.raises(TypeError, match="labels"):
        fused_linear_cross_entropy(hs, ws, None)
    with pytest.raises(ValueError, match="head_weight"):
        fused_linear_cross_entropy(hs, ws[:, :2], labels)
    out = fused_linear_cross_entropy(hs, ws, torch.full_like(labels, -100))
    out.backward()
    assert float(out.detach()) == 0.0 and float(hs.grad.abs().sum()) == 0.0


def test_no_gradient_work_without_grad_mode(monkeypatch):
    # under no_grad the loss is a plain value and the chunks are asked for no gradient
    import divmin.distill._fused as fused

    asked = []
    chunk = fused._chunk

    def spy(*args, need_grad, **kw):
        asked.append(need_grad)
        return chunk(*args, need_grad=need_grad, **kw)

    monkeypatch.setattr(fused, "_chunk", spy)
    hs, ws, ht, wt, labels = _problem()
    with torch.no_grad():
        out = fused_linear_kd_loss(hs, ws, ht, wt, divergence="js", labels=labels, chunk_size=4)
    assert asked and not any(asked) and out.grad_fn is None
    ref = token_kd_loss(hs @ ws.T, ht @ wt.T, divergence="js", labels=labels)
    torch.testing.assert_close(out, ref.detach(), rtol=1e-10, atol=1e-12)
    asked.clear()
    fused_linear_kd_loss(hs, ws, ht, wt, divergence="js", labels=labels, chunk_size=4).backward()
    assert asked and all(asked)


def test_fused_takes_token_kd_loss_keywords_only():
    """The fused loss's keywords are token_kd_loss's (one definition): defaults alike, unknown ones refused."""
    import inspect

    from divmin.distill import fused_linear_kd_loss, token_kd_loss

    def keywords(fn):
        return {n: p.default for n, p in inspect.signature(fn).parameters.items() if p.kind is p.KEYWORD_ONLY}

    assert keywords(fused_linear_kd_loss) == keywords(token_kd_loss)
    h, w = torch.randn(3, 4), torch.randn(5, 4)
    with pytest.raises(TypeError, match="temprature"):
        fused_linear_kd_loss(h, w, h, w, temprature=2.0)
