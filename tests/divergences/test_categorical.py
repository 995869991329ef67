"""categorical_divergence: closed forms, gradients, extremes, masks, chunking, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr

import divmin
from divmin import categorical_divergence as cd

from ._textbook import textbook
from .conftest import members

F64 = torch.float64


def _logits(*shape, scale=1.0, seed=0, dtype=F64):
    return (scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)).to(dtype)


def _probs(x: torch.Tensor) -> np.ndarray:
    return torch.softmax(x.double(), -1).numpy()


@members
def test_matches_textbook_and_reference_sum(div):
    a, b = _logits(6, 11, seed=1), _logits(6, 11, seed=2)
    got = cd(b, a, divergence=div, reduction="none")
    ref = textbook(div, _probs(a), _probs(b))
    # 1e-8: the textbook alpha formula itself loses ~eps/alpha near alpha = 0
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-8, atol=1e-12)
    # and the plain float64 reference sum_x Q f(P/Q) through the member's own f
    p, q = torch.softmax(a, -1), torch.softmax(b, -1)
    torch.testing.assert_close(got, (q * div.f(torch.log(p / q))).sum(-1), rtol=1e-10, atol=1e-12)


def test_kl_and_js_match_scipy():
    a, b = _logits(5, 13, seed=3), _logits(5, 13, seed=4)
    p, q = _probs(a), _probs(b)
    np.testing.assert_allclose(cd(b, a, divergence="forward_kl", reduction="none").numpy(), rel_entr(p, q).sum(-1), rtol=1e-12)
    np.testing.assert_allclose(cd(b, a, divergence="reverse_kl", reduction="none").numpy(), rel_entr(q, p).sum(-1), rtol=1e-12)
    # our JS is unscaled: KL(P||M) + KL(Q||M) = 2 * scipy's jensenshannon^2 (natural log)
    js = 2 * jensenshannon(p, q, axis=-1) ** 2
    np.testing.assert_allclose(cd(b, a, divergence="js", reduction="none").numpy(), js, rtol=1e-10)


@members
def test_divergence_of_a_distribution_to_itself_is_zero(div):
    a = _logits(4, 9, seed=5)
    assert cd(a.clone(), a, divergence=div, reduction="none").abs().max().item() < 1e-12


@members
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), vocab=st.integers(1, 40), scale=st.floats(0.01, 30.0))
def test_nonnegative(div, seed, vocab, scale):
    a, b = _logits(3, vocab, scale=scale, seed=seed), _logits(3, vocab, scale=scale, seed=seed + 1)
    assert (cd(b, a, divergence=div, reduction="none") >= -1e-10).all()


@members
def test_gradcheck_float64(div):
    a = _logits(5, 7, seed=6).requires_grad_()
    b = _logits(5, 7, seed=7).requires_grad_()
    mask = torch.tensor([True, False, True, True, False])
    fn = lambda x, y: cd(y, x, divergence=div, mask=mask, temperature=1.7, reduction="none", chunk_size=2)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (a, b), eps=1e-6, atol=1e-6)


@members
def test_chunked_equals_unchunked_in_value_and_gradient(div):
    a0, b0 = _logits(13, 17, seed=8, dtype=torch.float32), _logits(13, 17, seed=9, dtype=torch.float32)
    mask = torch.rand(13, generator=torch.Generator().manual_seed(1)) > 0.3
    results = []
    for chunk in (None, 1, 4, 13, 100):
        a, b = a0.clone().requires_grad_(), b0.clone().requires_grad_()
        loss = cd(b, a, divergence=div, mask=mask, chunk_size=chunk, temperature=0.7)
        loss.backward()
        results.append((loss.detach(), a.grad, b.grad))
    for loss, ga, gb in results[1:]:
        torch.testing.assert_close(loss, results[0][0], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(ga, results[0][1], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(gb, results[0][2], rtol=1e-5, atol=1e-7)


@members
def test_huge_logits_stay_exact_in_float32(div):
    """|logits| up to 1e4: float32 agrees with float64 wherever the float64 value fits in float32."""
    a, b = _logits(8, 10, scale=1e4, seed=10), _logits(8, 10, scale=1e4, seed=11)
    a[0], b[0] = a[1], b[1] * 0.5  # rows with shared argmax and large but finite ratios
    ref = cd(b, a, divergence=div, reduction="none")
    a32, b32 = a.float().requires_grad_(), b.float().requires_grad_()
    got = cd(b32, a32, divergence=div, reduction="none")
    assert not torch.isnan(got).any()
    fits = ref.abs() < 1e30
    assert torch.isfinite(got[fits]).all()
    torch.testing.assert_close(got[fits].double(), ref[fits], rtol=1e-4, atol=1e-3)
    got[fits].sum().backward()
    assert torch.isfinite(a32.grad).all() and torch.isfinite(b32.grad).all()


@members
def test_shared_padding_is_the_reduced_vocabulary(div):
    """-inf in the same entries of both (padded vocab) equals dropping those entries."""
    a, b = _logits(4, 12, seed=12), _logits(4, 12, seed=13)
    ap, bp = a.clone(), b.clone()
    ap[:, 9:], bp[:, 9:] = -math.inf, -math.inf
    ap, bp = ap.requires_grad_(), bp.requires_grad_()
    got = cd(bp, ap, divergence=div, reduction="none")
    torch.testing.assert_close(got, cd(b[:, :9], a[:, :9], divergence=div, reduction="none"), rtol=1e-10, atol=1e-12)
    got.sum().backward()
    assert torch.isfinite(ap.grad).all() and (ap.grad[:, 9:] == 0).all() and (bp.grad[:, 9:] == 0).all()


@members
def test_zero_in_one_argument_gives_the_limit(div):
    """P = 0 where Q > 0 (and the reverse): infinite exactly when the tail of f says so, else the textbook value."""
    a, b = _logits(2, 8, seed=14), _logits(2, 8, seed=15)
    a[0, :3] = -math.inf  # P misses entries of Q
    b[1, :3] = -math.inf  # Q misses entries of P
    got = cd(b, a, divergence=div, reduction="none")
    assert not torch.isnan(got).any()
    ref = textbook(div, _probs(a), _probs(b))
    assert bool(torch.isinf(got[0])) == (div.behaviour in ("mode-seeking", "both")) == bool(np.isinf(ref[0]))
    assert bool(torch.isinf(got[1])) == (div.behaviour in ("mass-covering", "both")) == bool(np.isinf(ref[1]))
    finite = np.isfinite(ref)
    np.testing.assert_allclose(got.numpy()[finite], ref[finite], rtol=1e-9, atol=1e-12)


@members
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_accumulate_in_float32(div, dtype):
    a, b = _logits(16, 50, scale=3.0, seed=16, dtype=dtype), _logits(16, 50, scale=3.0, seed=17, dtype=dtype)
    a, b = a.requires_grad_(), b.requires_grad_()
    got = cd(b, a, divergence=div, chunk_size=5)
    assert got.dtype == torch.float32
    a32, b32 = a.detach().float().requires_grad_(), b.detach().float().requires_grad_()
    ref = cd(b32, a32, divergence=div)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    got.backward()
    ref.backward()
    assert a.grad.dtype == dtype
    big = torch.finfo(dtype).max / 2  # half precision cannot hold larger true gradients
    for g, g32 in ((a.grad, a32.grad), (b.grad, b32.grad)):
        fits = g32.abs() < big
        assert torch.isfinite(g.float()[fits]).all()
        torch.testing.assert_close(g.float()[fits], g32[fits], rtol=1e-2, atol=1e-3)


def test_temperature_divides_both_logits():
    a, b = _logits(3, 6, seed=18), _logits(3, 6, seed=19)
    torch.testing.assert_close(cd(b, a, divergence="js", temperature=2.5), cd(b / 2.5, a / 2.5, divergence="js"))


def test_reductions_and_mask():
    a, b = _logits(2, 3, 5, seed=20), _logits(2, 3, 5, seed=21)
    rows = cd(b, a, divergence="forward_kl", reduction="none")
    assert rows.shape == (2, 3)
    mask = torch.tensor([[True, False, True], [False, False, True]])
    masked = cd(b, a, divergence="forward_kl", mask=mask, reduction="none")
    torch.testing.assert_close(masked, torch.where(mask, rows, torch.zeros_like(rows)))
    torch.testing.assert_close(cd(b, a, divergence="forward_kl", mask=mask), rows[mask].mean())
    torch.testing.assert_close(cd(b, a, divergence="forward_kl", mask=mask, reduction="sum"), rows[mask].sum())
    torch.testing.assert_close(cd(b, a, divergence="forward_kl", mask=mask.long()), rows[mask].mean())
    none = torch.zeros(2, 3, dtype=torch.bool)
    assert cd(b, a, divergence="forward_kl", mask=none).item() == 0.0


def test_masked_rows_may_hold_garbage():
    a, b = _logits(3, 4, seed=22).requires_grad_(), _logits(3, 4, seed=23)
    with torch.no_grad():
        a[1] = math.nan
    mask = torch.tensor([True, False, True])
    loss = cd(b, a, divergence="reverse_kl", mask=mask)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(a.grad).all() and (a.grad[1] == 0).all()


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nan_or_plus_inf_logits_in_counted_rows_are_refused_by_name(bad):
    a, b = _logits(3, 4, seed=28), _logits(3, 4, seed=29)
    a[1, 2] = bad
    with pytest.raises(ValueError, match="`target_logits`: 1 counted row"):
        cd(b, a, divergence="forward_kl", reduction="none")
    with pytest.raises(ValueError, match="`model_logits`: 1 counted row"):
        cd(a, b, divergence="forward_kl")
    b[0] = -math.inf  # a row with no finite logit
    with pytest.raises(ValueError, match="`model_logits`: 1 counted row"):
        cd(b, _logits(3, 4, seed=30), divergence="forward_kl")


def test_gradients_match_autograd_of_the_textbook_formula():
    """An independent gradient oracle: autograd through explicit softmaxes (float64)."""
    a, b = _logits(4, 6, seed=24).requires_grad_(), _logits(4, 6, seed=25).requires_grad_()
    cd(b, a, divergence="generalized_js").backward()
    a2, b2 = a.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    p, q = torch.softmax(a2, -1), torch.softmax(b2, -1)
    m = 0.5 * p + 0.5 * q
    (0.5 * (p * (p / m).log()).sum(-1) + 0.5 * (q * (q / m).log()).sum(-1)).mean().backward()
    torch.testing.assert_close(a.grad, a2.grad)
    torch.testing.assert_close(b.grad, b2.grad)


@pytest.mark.parametrize(
    "kwargs, err, word",
    [
        ({"target_logits": torch.zeros(2, 3), "model_logits": torch.zeros(2, 4)}, ValueError, "same shape"),
        ({"target_logits": torch.zeros(2, 3, dtype=torch.long)}, TypeError, "target_logits"),
        ({"model_logits": [[0.0, 1.0, 2.0]] * 2}, TypeError, "model_logits"),
        ({"divergence": "kl"}, ValueError, "forward_kl"),
        ({"divergence": 1.0}, TypeError, "divergence"),
        ({"mask": torch.ones(3, dtype=torch.bool)}, ValueError, "mask"),
        ({"mask": torch.ones(2)}, TypeError, "mask"),
        ({"temperature": 0.0}, ValueError, "temperature"),
        ({"reduction": "avg"}, ValueError, "reduction"),
        ({"chunk_size": 0}, ValueError, "chunk_size"),
    ],
)
def test_bad_inputs_name_the_argument(kwargs, err, word):
    args = {"target_logits": torch.zeros(2, 3), "model_logits": torch.zeros(2, 3)} | kwargs
    with pytest.raises(err, match=word):
        cd(**args)


def test_divergence_object_and_method_agree():
    a, b = _logits(3, 5, seed=26), _logits(3, 5, seed=27)
    d = divmin.divergence("alpha", alpha=0.3)
    torch.testing.assert_close(d.categorical(b, a), cd(b, a, divergence=d))


@members
def test_fast_path_terms_equal_the_generic_terms(div):
    """Members may override `terms` for speed; the override must equal the generic form."""
    from divmin.divergences._terms import generic_categorical_terms

    a, b = _logits(6, 10, scale=4.0, seed=30), _logits(6, 10, scale=4.0, seed=31)
    a[0, :3], b[0, 2:5], a[1, 7:], b[1, 7:] = -math.inf, -math.inf, -math.inf, -math.inf
    logp, logq = torch.log_softmax(a, -1), torch.log_softmax(b, -1)
    fast_f, fast_b = div.terms(logq, logp, with_grad=True)
    ref_f, ref_b = generic_categorical_terms(div, logq, logp, with_grad=True)
    torch.testing.assert_close(fast_f, ref_f, rtol=1e-10, atol=1e-12, equal_nan=True)
    # where D itself is infinite the generic B may be inf - inf; a fast path may do better there
    ok = ~torch.isnan(ref_b)
    torch.testing.assert_close(fast_b[ok], ref_b[ok], rtol=1e-10, atol=1e-12)
