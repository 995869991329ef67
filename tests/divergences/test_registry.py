"""The registry and the elementwise f, g, h of every member."""

from __future__ import annotations

import math

import pytest
import torch

import divmin
from divmin.divergences import Divergence, register

from ._textbook import TEXTBOOK
from .conftest import MEMBERS, members

F64 = torch.float64


def test_every_member_has_an_oracle():
    missing = set(divmin.available_divergences("f")) - set(TEXTBOOK)
    assert not missing, f"add a textbook oracle in tests/divergences/_textbook.py for {missing}"


def test_required_members_are_registered():
    required = {"forward_kl", "reverse_kl", "js", "generalized_js", "total_variation", "squared_hellinger",
                "pearson_chi2", "neyman_chi2", "jeffreys", "alpha", "softened_reverse_kl",
                "skew_forward_kl", "skew_reverse_kl"}
    assert required <= set(divmin.available_divergences("f"))


@members
def test_f_of_one_is_zero(div):
    assert div.f(torch.zeros(3, dtype=F64)).abs().max().item() < 1e-15


def _f_of_r(div: Divergence, r: torch.Tensor) -> torch.Tensor:
    return div.f(torch.log(r))


@members
def test_g_and_h_match_finite_differences_of_f(div):
    r = torch.cat([torch.linspace(0.05, 0.9, 12), torch.linspace(1.1, 12.0, 12)]).to(F64)
    d = 1e-4 * r
    f0, fp, fm = _f_of_r(div, r), _f_of_r(div, r + d), _f_of_r(div, r - d)
    f1 = (fp - fm) / (2 * d)
    f2 = (fp - 2 * f0 + fm) / d**2
    g_fd = f0 - r * f1
    h_fd = r**2 * f2
    torch.testing.assert_close(div.g(torch.log(r)), g_fd, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(div.h(torch.log(r)), h_fd, rtol=1e-4, atol=1e-5)


@members
def test_perspective_is_u_f_of_1_over_u_and_an_involution(div):
    t = torch.linspace(-6, 6, 25, dtype=F64)
    conj = div.perspective()
    # f*(u) = u f(1/u) with u = e^t
    torch.testing.assert_close(conj.f(t), torch.exp(t) * div.f(-t), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(conj.perspective().f(t), div.f(t), rtol=1e-9, atol=1e-12)


@members
def test_elementwise_fp32_matches_fp64_where_representable(div):
    t64 = torch.linspace(-80, 80, 321, dtype=F64)
    for name in ("f", "g", "h"):
        ref = getattr(div, name)(t64)
        out = getattr(div, name)(t64.float()).double()
        representable = ref.abs() < 1e37
        assert not torch.isnan(out).any(), f"{name} gave NaN"
        assert torch.isfinite(out[representable]).all(), f"{name} overflowed where the value fits fp32"
        torch.testing.assert_close(out[representable], ref[representable], rtol=2e-4, atol=1e-5)


@members
def test_infinite_log_ratios_give_limits_not_nan(div):
    t = torch.tensor([-math.inf, math.inf], dtype=F64)
    for name in ("f", "g", "h"):
        assert not torch.isnan(getattr(div, name)(t)).any(), name
    # f(0) is the limit of f(r) as r -> 0
    tiny = div.f(torch.tensor([-1e8], dtype=F64))
    at_zero = div.f(torch.tensor([-math.inf], dtype=F64))
    if torch.isfinite(at_zero).all():
        torch.testing.assert_close(at_zero, tiny, rtol=1e-5, atol=1e-5)
    else:
        assert tiny.item() > 10.0


def test_alpha_reaches_the_kls_continuously():
    t = torch.linspace(-5, 5, 41, dtype=F64)
    fwd, rev = divmin.divergence("forward_kl"), divmin.divergence("reverse_kl")
    for a, kl in ((0.0, rev), (1e-9, rev), (1.0, fwd), (1.0 - 1e-9, fwd)):
        alpha = divmin.divergence("alpha", alpha=a)
        # f differs from the KL generator by c (r - 1): compare f - f'(1)(r - 1) forms through h and g
        torch.testing.assert_close(alpha.h(t), kl.h(t), rtol=1e-6, atol=1e-6)
        dg = alpha.g(t) - kl.g(t)
        torch.testing.assert_close(dg, dg[:1].expand_as(dg), rtol=0, atol=1e-5)
    # the same in float32, where a naive (r^a - a r - (1-a)) / (a (a-1)) cancels catastrophically
    logits_p, logits_q = torch.randn(4, 9, generator=torch.Generator().manual_seed(0)).unbind(0)[:2]
    for a, kl in ((1e-5, "reverse_kl"), (1 - 1e-5, "forward_kl")):
        got = divmin.categorical_divergence(logits_q, logits_p, divergence=divmin.divergence("alpha", alpha=a))
        ref = divmin.categorical_divergence(logits_q.double(), logits_p.double(), divergence=kl)
        assert abs(got.item() - ref.item()) < 1e-4 * (1 + ref.item())


def test_named_relations_between_members():
    p, q = torch.randn(2, 5, 7, dtype=F64).unbind(0)
    cd = divmin.categorical_divergence
    torch.testing.assert_close(cd(q, p, divergence="js"), 2 * cd(q, p, divergence=divmin.divergence("generalized_js", beta=0.5)))
    torch.testing.assert_close(2 * cd(q, p, divergence="squared_hellinger"), cd(q, p, divergence=divmin.divergence("alpha", alpha=0.5)))
    torch.testing.assert_close(cd(q, p, divergence="jeffreys"), cd(q, p, divergence="forward_kl") + cd(q, p, divergence="reverse_kl"))
    torch.testing.assert_close(cd(q, p, divergence=divmin.divergence("skew_forward_kl", skew=0.0)), cd(q, p, divergence="forward_kl"))


def test_behaviour_and_h_bounded_are_read_off_f():
    d = divmin.divergence
    assert d("forward_kl").behaviour == "mass-covering"
    assert d("reverse_kl").behaviour == "mode-seeking"
    assert d("jeffreys").behaviour == "both"
    assert d("js").behaviour == "balanced"
    assert d("reverse_kl").h_bounded and d("js").h_bounded
    assert not d("forward_kl").h_bounded and not d("alpha", alpha=0.5).h_bounded
    assert d("alpha", alpha=0.0).h_bounded


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match="forward_kl.*reverse_kl|reverse_kl.*forward_kl") as e:
        divmin.divergence("kl_forward")
    assert "kl_forward" in str(e.value)


@pytest.mark.parametrize(
    "name, params, err, word",
    [
        ("alpha", {"alpha": float("nan")}, ValueError, "alpha"),
        ("alpha", {"alpha": "0.5"}, TypeError, "alpha"),
        ("generalized_js", {"beta": 1.0}, ValueError, "beta"),
        ("generalized_js", {"beta": 0.0}, ValueError, "beta"),
        ("skew_forward_kl", {"skew": -0.1}, ValueError, "skew"),
        ("skew_reverse_kl", {"skew": 1.0}, ValueError, "skew"),
        ("js", {"beta": 0.5}, TypeError, "beta"),
    ],
)
def test_bad_parameters_name_the_argument(name, params, err, word):
    with pytest.raises(err, match=word):
        divmin.divergence(name, **params)


def test_as_divergence_accepts_names_and_objects_only():
    d = divmin.divergence("js")
    assert divmin.as_divergence(d) is d
    assert divmin.as_divergence("js") == d
    with pytest.raises(TypeError, match="divergence"):
        divmin.as_divergence(3)


def test_register_rejects_duplicates_and_non_members():
    with pytest.raises(ValueError, match="already registered"):
        register("js")(type("Other", (Divergence,), {}))
    with pytest.raises(TypeError, match="Discrepancy subclass"):
        register("not_a_member")(int)


def test_members_are_hashable_values():
    assert divmin.divergence("alpha", alpha=0.3) == divmin.divergence("alpha", alpha=0.3)
    assert len({*MEMBERS}) == len(MEMBERS)
    assert str(divmin.divergence("alpha", alpha=0.3)) == "alpha(alpha=0.3)"


def test_the_tables_of_the_package_are_registries_with_one_error_shape():
    from divmin.divergences import _base, _capabilities, _sinkhorn
    from divmin.registry import Registry

    for table in (_base.MEMBERS, _capabilities.CAPABILITIES, _sinkhorn.COSTS):
        assert isinstance(table, Registry)
    assert _base.MEMBERS.names() == divmin.available_divergences()
    assert _capabilities.CAPABILITIES.names() == divmin.divergences.available_capabilities()
    assert tuple(_sinkhorn.COSTS.names()) == divmin.divergences.available_costs() == ("euclidean", "l1", "sqeuclidean")
    with pytest.raises(ValueError, match=r"unknown divergence 'jss' \(did you mean 'js'\?\); valid names: alpha, "):
        divmin.divergence("jss")
    with pytest.raises(ValueError, match=r"unknown `cost` 'l2'; valid names: \('euclidean', 'l1', 'sqeuclidean'\)"):
        divmin.sinkhorn_divergence(torch.zeros(2, 1), torch.ones(2, 1), epsilon=0.1, cost="l2")
    with pytest.raises(ValueError, match="unknown capability 'x'; valid: implicit_reward, score_weight"):
        divmin.divergence("js").supports("x")


def test_a_capability_registered_twice_is_refused():
    with pytest.raises(ValueError, match="capability 'score_weight' is already registered"):
        divmin.divergences.capability("score_weight", "anything")(lambda member: None)
