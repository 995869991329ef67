"""token_kd_loss: masked mean of the closed form, num_items, TRL GKD parity, top-k teachers, vocab policies."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import rel_entr

import divmin
from divmin.distill import TopKTeacher, token_kd_loss

from ..divergences.conftest import members

F64 = torch.float64


def _logits(*shape, seed=0, scale=2.0):
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _labels(shape, seed=3, frac=0.3):
    g = torch.Generator().manual_seed(seed)
    lab = torch.randint(0, 5, shape, generator=g)
    return torch.where(torch.rand(shape, generator=g) < frac, torch.full_like(lab, -100), lab)


@members
def test_equals_masked_mean_of_categorical_divergence(div):
    s, t, lab = _logits(3, 5, 9, seed=1), _logits(3, 5, 9, seed=2), _labels((3, 5))
    mask = lab != -100
    got = token_kd_loss(s, t, divergence=div, labels=lab, temperature=1.7)
    rows = divmin.categorical_divergence(s, t, divergence=div, temperature=1.7, reduction="none")
    torch.testing.assert_close(got, rows[mask].sum() / mask.sum(), rtol=1e-12, atol=1e-12)


def test_num_items_and_empty_mask_and_forward_kl_against_scipy():
    s, t, lab = _logits(2, 4, 7, seed=4), _logits(2, 4, 7, seed=5), _labels((2, 4), frac=0.5)
    p, q = torch.softmax(t, -1).numpy(), torch.softmax(s, -1).numpy()
    per_row = rel_entr(p, q).sum(-1)
    keep = (lab != -100).numpy()
    np.testing.assert_allclose(float(token_kd_loss(s, t, labels=lab)), per_row[keep].mean(), rtol=1e-12)
    np.testing.assert_allclose(float(token_kd_loss(s, t, labels=lab, num_items=11)), per_row[keep].sum() / 11,
                               rtol=1e-12)
    # gradient accumulation: two micro-batches scaled by the global count add up to the full-batch mean
    full = token_kd_loss(s, t, labels=lab)
    n = int((lab != -100).sum())
    split = sum(token_kd_loss(s[i:i + 1], t[i:i + 1], labels=lab[i:i + 1], num_items=torch.tensor(n)) for i in (0, 1))
    torch.testing.assert_close(split, full)
    none = torch.full_like(lab, -100)
    sg = s.clone().requires_grad_()
    out = token_kd_loss(sg, t, labels=none)
    out.backward()
    assert float(out.detach()) == 0.0 and float(sg.grad.abs().sum()) == 0.0


@pytest.mark.parametrize("beta,name,kw", [(0.5, "generalized_js", {"beta": 0.5}),
                                          (0.1, "generalized_js", {"beta": 0.1}),
                                          (0.0, "forward_kl", {}), (1.0, "reverse_kl", {})])
def test_matches_trl_gkd_generalized_jsd(beta, name, kw):
    gkd = pytest.importorskip("trl.experimental.gkd.gkd_trainer")
    s, t, lab = _logits(2, 6, 11, seed=7), _logits(2, 6, 11, seed=8), _labels((2, 6))
    sg1, sg2 = s.clone().requires_grad_(), s.clone().requires_grad_()
    ref = gkd.GKDTrainer.generalized_jsd_loss(sg1, t, labels=lab, beta=beta, temperature=0.8)
    got = token_kd_loss(sg2, t, divergence=divmin.divergence(name, **kw), labels=lab, temperature=0.8)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    ref.backward(), got.backward()
    torch.testing.assert_close(sg2.grad, sg1.grad, rtol=1e-8, atol=1e-12)
    ref_n = gkd.GKDTrainer.generalized_jsd_loss(s, t, labels=lab, beta=beta, num_items_in_batch=17)
    torch.testing.assert_close(token_kd_loss(s, t, divergence=divmin.divergence(name, **kw), labels=lab,
                                             num_items=17), ref_n, rtol=1e-10, atol=1e-12)


@members
@pytest.mark.parametrize("tail", ["bucket", "renormalize"])
def test_topk_teacher_with_k_equal_v_equals_full_teacher(div, tail):
    s, t, lab, temp = _logits(4, 8, seed=9), _logits(4, 8, seed=10), _labels((4,)), 1.5
    lp = torch.log_softmax(t / temp, -1)
    perm = torch.argsort(torch.rand(4, 8, generator=torch.Generator().manual_seed(0)), -1)  # any order
    top = TopKTeacher(torch.gather(lp, -1, perm), perm, tail)
    s1, s2 = s.clone().requires_grad_(), s.clone().requires_grad_()
    full = token_kd_loss(s1, t, divergence=div, labels=lab, temperature=temp)
    sparse = token_kd_loss(s2, top, divergence=div, labels=lab, temperature=temp)
    torch.testing.assert_close(sparse, full, rtol=1e-9, atol=1e-12)
    full.backward(), sparse.backward()
    torch.testing.assert_close(s2.grad, s1.grad, rtol=1e-7, atol=1e-10)


def test_topk_renormalize_equals_dense_teacher_masked_off_topk():
    s, t = _logits(5, 12, seed=11), _logits(5, 12, seed=12)
    val, idx = torch.log_softmax(t, -1).topk(4, dim=-1)
    dense = torch.full_like(t, -math.inf).scatter(-1, idx, val)
    for name in ("forward_kl", "js", "total_variation", "squared_hellinger"):
        got = token_kd_loss(s, TopKTeacher(val, idx, "renormalize"), divergence=name)
        torch.testing.assert_close(got, token_kd_loss(s, dense, divergence=name), rtol=1e-10, atol=1e-12)
    # a mode-seeking member is infinite: the student has mass where the renormalised teacher has none
    assert math.isinf(float(token_kd_loss(s, TopKTeacher(val, idx, "renormalize"), divergence="reverse_kl")))


def test_topk_bucket_is_the_coarsened_divergence_and_below_the_full_one():
    s, t = _logits(5, 12, seed=13), _logits(5, 12, seed=14)
    lp = torch.log_softmax(t, -1)
    val, idx = lp.topk(3, dim=-1)
    p, q = lp.exp().numpy(), torch.softmax(s, -1).numpy()
    ids = idx.numpy()
    pk, qk = np.take_along_axis(p, ids, -1), np.take_along_axis(q, ids, -1)
    pc = np.concatenate([pk, 1 - pk.sum(-1, keepdims=True)], -1)
    qc = np.concatenate([qk, 1 - qk.sum(-1, keepdims=True)], -1)
    got = token_kd_loss(s, TopKTeacher(val, idx), divergence="forward_kl")
    np.testing.assert_allclose(float(got), rel_entr(pc, qc).sum(-1).mean(), rtol=1e-10)
    got_r = token_kd_loss(s, TopKTeacher(val, idx), divergence="reverse_kl")
    np.testing.assert_allclose(float(got_r), rel_entr(qc, pc).sum(-1).mean(), rtol=1e-10)
    for name in ("forward_kl", "reverse_kl", "js", "total_variation"):
        assert float(token_kd_loss(s, TopKTeacher(val, idx), divergence=name)) <= \
            float(token_kd_loss(s, t, divergence=name)) + 1e-12


def test_vocab_policies():
    s, t = _logits(3, 10, seed=15), _logits(3, 13, seed=16)  # the teacher has 3 extra (padding) ids
    sg = s.clone().requires_grad_()
    got = token_kd_loss(sg, t, divergence="js", vocab_policy="truncate")
    torch.testing.assert_close(got, divmin.categorical_divergence(s, t[:, :10], divergence="js"))
    got.backward()
    # the student's own extra ids: zero gradient under truncation
    s2, t2 = _logits(3, 13, seed=17).requires_grad_(), _logits(3, 10, seed=18)
    token_kd_loss(s2, t2, divergence="forward_kl").backward()
    assert float(s2.grad[:, 10:].abs().sum()) == 0.0
    # pad: the student cannot represent the teacher's extra mass -> forward KL infinite, reverse KL finite
    assert math.isinf(float(token_kd_loss(s, t, divergence="forward_kl", vocab_policy="pad")))
    rev = token_kd_loss(s, t, divergence="reverse_kl", vocab_policy="pad")
    padded = torch.cat([s, torch.full((3, 3), -math.inf, dtype=F64)], -1)
    p, q = torch.softmax(t, -1).numpy(), torch.softmax(padded, -1).numpy()
    np.testing.assert_allclose(float(rev), rel_entr(q, p).sum(-1).mean(), rtol=1e-10)


@pytest.mark.parametrize("bad,err", [
    (dict(labels=torch.zeros(3, dtype=torch.long)), "labels"),
    (dict(labels=torch.zeros(2, 4)), "labels"),
    (dict(temperature=0.0), "temperature"),
    (dict(num_items=0), "num_items"),
    (dict(vocab_policy="zero"), "vocab_policy"),
    (dict(divergence="nope"), "nope"),
])
def test_bad_arguments_raise_naming_them(bad, err):
    with pytest.raises((ValueError, TypeError), match=err):
        token_kd_loss(_logits(2, 4, 6), _logits(2, 4, 7), **bad)


def test_bad_topk_teacher():
    s = _logits(2, 6)
    val, idx = torch.log_softmax(_logits(2, 6, seed=1), -1).topk(2)
    with pytest.raises(ValueError, match="indices"):
        token_kd_loss(s, TopKTeacher(val, idx + 5))
    with pytest.raises(ValueError, match="probability 1"):
        token_kd_loss(s, TopKTeacher(val + 1.0, idx))
    with pytest.raises(ValueError, match="tail"):
        token_kd_loss(s, TopKTeacher(val, idx, "drop"))


def test_bf16_logits_accumulate_in_float32_and_chunking_changes_nothing():
    s, t, lab = _logits(4, 6, 50, seed=20), _logits(4, 6, 50, seed=21), _labels((4, 6))
    ref = token_kd_loss(s, t, divergence="js", labels=lab)
    out = token_kd_loss(s.bfloat16(), t.bfloat16(), divergence="js", labels=lab, chunk_size=5)
    assert out.dtype == torch.float32
    assert abs(float(out) - float(ref)) < 0.02 * float(ref)
    torch.testing.assert_close(token_kd_loss(s, t, divergence="js", labels=lab, chunk_size=3), ref)
