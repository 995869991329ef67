"""categorical_divergence's analytic, chunked gradients: oracles in float64, float32 accuracy, autograd corners."""

from __future__ import annotations

import math

import pytest
import torch

import divmin
from divmin import categorical_divergence as cd
from divmin.divergences._terms import generic_categorical_terms

from .conftest import members

F64 = torch.float64


def _logits(*shape, scale=1.0, seed=0, dtype=F64):
    return (scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)).to(dtype)


def _generic_autograd(div, model, target, mask, temperature):
    """The oracle: float64 autograd through the generic terms (f, g and the perspective only), no fast path."""
    m = model.detach().double().requires_grad_()
    t = target.detach().double().requires_grad_()
    logq, logp = (m / temperature).log_softmax(-1), (t / temperature).log_softmax(-1)
    rows = generic_categorical_terms(div, logq, logp, with_grad=False)[0].sum(-1)
    value = torch.where(mask, rows, 0.0).sum() / mask.sum()
    value.backward()
    return value.detach(), m.grad, t.grad


@members
def test_float32_value_and_gradients_match_float64_autograd_of_the_generic_terms(div):
    """Default chunking, fast paths, a mask, -inf logits shared by both and a temperature."""
    a, b = _logits(37, 53, scale=2.0, seed=1, dtype=torch.float32), _logits(37, 53, scale=2.0, seed=2, dtype=torch.float32)
    a[3, :7], b[3, :7] = -math.inf, -math.inf
    mask = torch.rand(37, generator=torch.Generator().manual_seed(3)) > 0.2
    a, b = a.requires_grad_(), b.requires_grad_()
    value = cd(b, a, divergence=div, mask=mask, temperature=1.3)
    value.backward()
    ref, ref_gb, ref_ga = _generic_autograd(div, b, a, mask, 1.3)
    torch.testing.assert_close(value.double(), ref, rtol=2e-5, atol=1e-6)
    for got, want in ((a.grad, ref_ga), (b.grad, ref_gb)):
        want = torch.nan_to_num(want)  # autograd's 0 * inf at the shared -inf entries
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-6)


@members
def test_gradcheck_float64_at_the_default_chunking(div):
    a = _logits(6, 9, seed=4).requires_grad_()
    b = _logits(6, 9, seed=5).requires_grad_()
    mask = torch.tensor([True, True, False, True, True, True])
    fn = lambda x, y: cd(y, x, divergence=div, mask=mask, temperature=0.8, reduction="none")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (a, b), eps=1e-6, atol=1e-6)


@members
def test_fast_terms_given_the_probabilities_equal_the_generic_terms(div):
    a, b = _logits(6, 10, scale=4.0, seed=6), _logits(6, 10, scale=4.0, seed=7)
    a[0, :3], b[0, 2:5], a[1, 7:], b[1, 7:] = -math.inf, -math.inf, -math.inf, -math.inf
    logp, logq = torch.log_softmax(a, -1), torch.log_softmax(b, -1)
    fast_f, fast_b = div.terms(logq, logp, with_grad=True, model_p=torch.softmax(b, -1), target_p=torch.softmax(a, -1))
    ref_f, ref_b = generic_categorical_terms(div, logq, logp, with_grad=True)
    torch.testing.assert_close(fast_f, ref_f, rtol=1e-10, atol=1e-12, equal_nan=True)
    ok = ~torch.isnan(ref_b)  # where D is infinite the generic B may be inf - inf
    torch.testing.assert_close(fast_b[ok], ref_b[ok], rtol=1e-10, atol=1e-12)


def test_a_second_backward_through_the_same_graph_gives_the_same_gradient():
    a, b = _logits(9, 12, seed=8).requires_grad_(), _logits(9, 12, seed=9).requires_grad_()
    value = cd(b, a, divergence="js", chunk_size=4)
    first_a, first_b = torch.autograd.grad(value, (a, b), retain_graph=True)
    second_a, second_b = torch.autograd.grad(2.0 * value, (a, b))
    torch.testing.assert_close(second_a, 2.0 * first_a)
    torch.testing.assert_close(second_b, 2.0 * first_b)


def test_no_gradient_work_without_grad_mode():
    b = _logits(4, 5, seed=10).requires_grad_()
    with torch.no_grad():
        value = cd(b, _logits(4, 5, seed=11), divergence="forward_kl")
    assert not value.requires_grad


def test_weighted_rows_get_their_own_upstream_gradient():
    a, b = _logits(5, 7, seed=12), _logits(5, 7, seed=13).requires_grad_()
    w = torch.tensor([0.0, 1.0, -2.0, 0.5, 3.0], dtype=F64)
    (cd(b, a, divergence="jeffreys", reduction="none") * w).sum().backward()
    for i in range(5):
        bi = b.detach()[i:i + 1].clone().requires_grad_()
        cd(bi, a[i:i + 1], divergence="jeffreys", reduction="sum").backward()
        torch.testing.assert_close(b.grad[i], w[i] * bi.grad[0])


def test_generalized_js_keeps_float32_accuracy_on_liger_jsd_case():
    """Liger-Kernel test_jsd's shape (B*T = 2*1024, V = 3200) and beta = 0.1; their rtol is 1e-6.

    ``log M`` by logaddexp in float32 gave a relative error of 1.9e-6 here; M formed in
    probability space first stays within 1e-6.
    """
    gen = torch.Generator().manual_seed(42)
    student = torch.randn(2048, 3200, generator=gen).log_softmax(-1)
    teacher = torch.randn(2048, 3200, generator=gen).log_softmax(-1)
    div = divmin.divergence("generalized_js", beta=0.1)
    got = cd(student, teacher, divergence=div).item()
    ref = cd(student.double(), teacher.double(), divergence=div).item()
    assert abs(got - ref) <= 1e-6 * ref


@pytest.mark.parametrize("seed", [0, 1])
def test_total_variation_gradient_takes_its_sign_from_the_probabilities(seed):
    """Near ties, the float32 log-ratio's absolute error (~1e-6 at |log P| ~ 7) flips the sign
    of Q - P on entries that float32 probabilities still resolve; each flip is an error of
    Q/N in the gradient. Entries with |P - Q| > 1.5e-6 Q must match float64."""
    gen = torch.Generator().manual_seed(seed)
    a = 2.0 * torch.randn(256, 1000, generator=gen)
    b = (a + 1e-5 * torch.randn(256, 1000, generator=gen)).requires_grad_()
    cd(b, a, divergence="total_variation").backward()
    b64 = b.detach().double().requires_grad_()
    cd(b64, a.double(), divergence="total_variation").backward()
    p64, q64 = torch.softmax(a.double(), -1), torch.softmax(b64.detach(), -1)
    resolved = (p64 - q64).abs() > 1.5e-6 * q64
    err = (b.grad.double() - b64.grad).abs()
    assert bool((err[resolved] < 0.25 * q64[resolved] / 256).all())
