"""A divergence is one class: its fast paths (``terms``, ``triton_terms``) are found from the class.

A subclass inherits them while it leaves the math alone; one that changes f without writing
its own gets the generic terms from its own f (never its parent's formula) and no GPU terms.
The extension hook ``terms`` is model-first; the target-first ``categorical_terms`` still works,
with a DeprecationWarning. The oracle for a changed member is the registry member with the
same f (Jeffreys), computed by the library's generic path and by a plain float64 sum.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import pytest
import torch
from torch import Tensor

import divmin
from divmin.divergences import Divergence, ForwardKL, TritonTerms

F64 = torch.float64


def _pair(seed=0, n=4, v=9):
    g = torch.Generator().manual_seed(seed)
    return 2.0 * torch.randn(n, v, generator=g, dtype=F64), 2.0 * torch.randn(n, v, generator=g, dtype=F64)


def _plain_sum(model, target, f):
    """sum_x Q f(P/Q) in float64, for finite logits."""
    logq, logp = model.log_softmax(-1), target.log_softmax(-1)
    return (logq.exp() * f(logp - logq)).sum(-1)


@dataclasses.dataclass(frozen=True)
class SameKL(ForwardKL):
    """A subclass that changes nothing of the math (a docstring, a helper): it keeps both fast paths."""

    def describe(self) -> str:
        return "forward KL, renamed"


@dataclasses.dataclass(frozen=True)
class JeffreysFromKL(ForwardKL):
    """Jeffreys written as a subclass of forward KL: f(r) = (r - 1) log r, g(r) = 1 - r - log r, h(r) = 1 + r."""

    def f(self, log_r: Tensor) -> Tensor:
        return torch.expm1(log_r) * log_r

    def g(self, log_r: Tensor) -> Tensor:
        return -torch.expm1(log_r) - log_r

    def h(self, log_r: Tensor) -> Tensor:
        return 1.0 + torch.exp(log_r)

    def perspective(self) -> Divergence:
        return self


def test_a_subclass_that_keeps_the_math_inherits_both_fast_paths():
    assert SameKL.terms is ForwardKL.terms and SameKL.triton_terms is ForwardKL.triton_terms
    assert SameKL.has_triton_terms and SameKL._triton_missing is None
    model, target = _pair()
    torch.testing.assert_close(SameKL().categorical(model, target, reduction="none"),
                               ForwardKL().categorical(model, target, reduction="none"), rtol=0, atol=0)


def test_a_subclass_that_changes_f_computes_its_own_f_not_the_parents_fast_path():
    model, target = _pair(seed=1)
    got = JeffreysFromKL().categorical(model, target, reduction="none")
    want = _plain_sum(model, target, lambda t: torch.expm1(t) * t)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    forward_kl = ForwardKL().categorical(model, target, reduction="none")
    assert (got - forward_kl).abs().min() > 1e-3  # the parent's formula would be a different number
    assert JeffreysFromKL.terms is Divergence.terms  # the generic terms, from this class's f and g


def test_a_subclass_that_changes_f_has_no_triton_terms_and_says_why():
    assert not JeffreysFromKL.has_triton_terms
    assert JeffreysFromKL().triton_terms() is None  # never the parent's kernel
    assert "overrides f, g, perspective of ForwardKL" in JeffreysFromKL._triton_missing
    assert ForwardKL.has_triton_terms and ForwardKL().triton_terms is not None


def test_a_new_member_without_triton_terms_says_so():
    @dataclasses.dataclass(frozen=True)
    class Fresh(Divergence):
        def f(self, log_r):
            return torch.expm1(log_r) * log_r

    assert not Fresh.has_triton_terms and Fresh._triton_missing == "Fresh defines no `triton_terms`"


def test_a_subclass_that_writes_its_own_fast_paths_keeps_them():
    def jeffreys_terms(self, model_logp, target_logp, *, with_grad=False, model_p=None, target_p=None):
        return divmin.divergence("jeffreys").terms(model_logp, target_logp, with_grad=with_grad)

    def kernel(self):
        return TritonTerms("a device function", (1.0, 2.0, 3.0))

    cls = dataclasses.dataclass(frozen=True)(type("Fast", (JeffreysFromKL,), {"terms": jeffreys_terms,
                                                                            "triton_terms": kernel}))
    assert cls.terms is jeffreys_terms and cls.has_triton_terms
    assert cls().triton_terms() == ("a device function", (1.0, 2.0, 3.0))
    # and a subclass of it that changes f again loses both
    again = type("Again", (cls,), {"f": lambda self, t: 2.0 * t})
    assert again.terms is Divergence.terms and not again.has_triton_terms
    assert "overrides f of Fast" in again._triton_missing


def test_every_registry_member_writes_or_inherits_its_fast_paths_from_its_own_class():
    for name in divmin.available_divergences("f"):
        cls = type(divmin.divergence(name))
        assert cls.has_triton_terms, name
        assert "triton_terms" in cls.__dict__, f"{name}: its Triton terms must be defined on its class"


def test_the_hook_is_model_first():
    # P = (0.9, 0.1), Q = (0.5, 0.5): forward KL's F = P log(P/Q) tells the two orders apart
    logq, logp = torch.tensor([0.5, 0.5], dtype=F64).log(), torch.tensor([0.9, 0.1], dtype=F64).log()
    for name in ("forward_kl", "alpha:0.3", "pearson_chi2", "skew_reverse_kl:0.2"):
        div = divmin.divergence(name)
        value = float(div.terms(logq, logp)[0].sum())
        plain = float(_plain_sum(logq, logp, lambda t: div.f(t)))
        swapped = float(_plain_sum(logp, logq, lambda t: div.f(t)))
        assert abs(plain - swapped) > 1e-2
        assert value == pytest.approx(plain, rel=1e-12)


def test_the_target_first_method_still_works_and_warns():
    model, target = _pair(seed=2)
    logq, logp = model.log_softmax(-1), target.log_softmax(-1)
    div = divmin.divergence("js")
    with pytest.warns(DeprecationWarning, match="target-first"):
        old_f, old_b = div.categorical_terms(logp, logq, True)
    new_f, new_b = div.terms(logq, logp, with_grad=True)
    assert torch.equal(old_f, new_f) and torch.equal(old_b, new_b)


def _old_style_kl(self, logp, logq, with_grad, p=None, q=None):
    """Forward KL written for the target-first hook: P log(P/Q) and B = -P."""
    p = logp.exp()
    return p * (logp - logq), (-p if with_grad else None)


def test_a_subclass_written_for_the_target_first_hook_warns_and_computes_the_right_value():
    with pytest.warns(DeprecationWarning, match="target-first"):
        cls = dataclasses.dataclass(frozen=True)(type("OldKL", (Divergence,), {
            "f": lambda self, t: torch.special.xlogy(t.exp(), t.exp()),
            "g": lambda self, t: -t.exp(),
            "perspective": lambda self: divmin.divergence("reverse_kl"),
            "categorical_terms": _old_style_kl}))
    model, target = _pair(seed=3)
    model = model.requires_grad_()
    got = cls().categorical(model, target, reduction="none")
    want = divmin.divergence("forward_kl").categorical(model, target, reduction="none")
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)  # swapped, it would be reverse KL
    (g_got,) = torch.autograd.grad(got.sum(), model)
    (g_want,) = torch.autograd.grad(want.sum(), model)
    torch.testing.assert_close(g_got, g_want, rtol=1e-10, atol=1e-12)
    assert not cls.has_triton_terms


def test_an_old_style_override_that_calls_super_reaches_the_parents_terms():
    def doubled(self, logp, logq, with_grad, p=None, q=None):
        f_val, b_val = super(cls, self).categorical_terms(logp, logq, with_grad, p, q)
        return 2.0 * f_val, (None if b_val is None else 2.0 * b_val)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        cls = type("Doubled", (ForwardKL,), {"categorical_terms": doubled})
        model, target = _pair(seed=4)
        got = cls().categorical(model, target, reduction="none")
    want = 2.0 * ForwardKL().categorical(model, target, reduction="none")
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert math.isfinite(float(got.sum()))


def test_the_chunk_building_block_is_model_first_and_refuses_the_old_positional_order():
    from divmin.divergences.kernels import chunk_rows_and_grads, softmax_pair

    model, target = _pair(seed=5)
    (logq, q), (logp, p) = softmax_pair(model), softmax_pair(target)
    div = divmin.divergence("forward_kl")
    rows, g_model, g_target, finite = chunk_rows_and_grads(div, model_logp=logq, target_logp=logp, model_p=q,
                                                           target_p=p, model_grad=True, target_grad=False)
    torch.testing.assert_close(rows, (p * (logp - logq)).sum(-1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_model, q - p, rtol=1e-12, atol=1e-12)  # d KL(P || Q) / d model logits
    assert g_target is None and bool(finite.all())
    with pytest.raises(TypeError):
        chunk_rows_and_grads(div, logp, logq, p, q, False, True)  # the target-first call of earlier releases
