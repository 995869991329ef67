"""The registry owns capabilities: spec strings, kinds, cached capability checks, the Sinkhorn member."""

from __future__ import annotations

import math

import numpy as np
import ot
import pytest
import torch

import divmin
from divmin.divergences import Sinkhorn, available_capabilities, available_kinds
from divmin.divergences._capabilities import why_not

from .conftest import MEMBER_IDS, MEMBERS


@pytest.mark.parametrize("div", MEMBERS, ids=MEMBER_IDS)
def test_spec_round_trips(div):
    assert divmin.divergence(div.spec) == div
    assert divmin.as_divergence(div.spec) == div


@pytest.mark.parametrize("spec, want", [
    ("alpha:0.3", divmin.divergence("alpha", alpha=0.3)),
    ("alpha:alpha=-0.5", divmin.divergence("alpha", alpha=-0.5)),
    ("skew_forward_kl:0", divmin.divergence("skew_forward_kl", skew=0)),
    ("sinkhorn:epsilon=0.05,cost=l1", Sinkhorn(epsilon=0.05, cost="l1")),
    ("sinkhorn:debias=False", Sinkhorn(debias=False)),
])
def test_spec_strings_parse(spec, want):
    assert divmin.divergence(spec) == want


@pytest.mark.parametrize("spec, err, word", [
    ("js:0.5", ValueError, "exactly one parameter"),
    ("sinkhorn:0.5", ValueError, "exactly one parameter"),
    ("alpha:beta=0.5", TypeError, "unknown parameter"),
    ("alpha:nan", TypeError, "alpha"),  # not a Python literal: kept as the string "nan"
    ("kl:0.5", ValueError, "forward_kl"),
])
def test_bad_specs_are_refused_with_a_reason(spec, err, word):
    with pytest.raises(err, match=word):
        divmin.divergence(spec)


def test_spec_and_keyword_for_the_same_parameter_is_refused():
    with pytest.raises(TypeError, match="both"):
        divmin.divergence("alpha:0.3", alpha=0.5)


def test_kinds_partition_the_registry():
    assert available_kinds() == ["f", "integral", "optimal_transport"]
    by_kind = [set(divmin.available_divergences(k)) for k in available_kinds()]
    assert set.union(*by_kind) == set(divmin.available_divergences())
    assert sum(map(len, by_kind)) == len(divmin.available_divergences())
    assert all(isinstance(divmin.divergence(n), divmin.Divergence) for n in divmin.available_divergences("f"))
    with pytest.raises(ValueError, match="valid kinds"):
        divmin.available_divergences("nope")


def test_methods_refuse_other_kinds_by_name():
    with pytest.raises(ValueError, match="kind 'optimal_transport'"):
        divmin.categorical_divergence(torch.zeros(3), torch.zeros(3), divergence="sinkhorn")
    with pytest.raises(ValueError, match="`teacher`.*kind"):
        divmin.as_divergence("sinkhorn:epsilon=0.2", "teacher")
    assert divmin.as_divergence("sinkhorn", kinds=("optimal_transport",)).kind == "optimal_transport"
    assert divmin.as_divergence("sinkhorn", kinds=None) == Sinkhorn()


def _implicit_reward_by_hand(div) -> bool:
    t = torch.linspace(-30.0, 30.0, 601, dtype=torch.float64)
    return bool((div.h(t) > 0).all()) and float(div.g(torch.tensor([math.inf], dtype=torch.float64))) == -math.inf


@pytest.mark.parametrize("div", MEMBERS, ids=MEMBER_IDS)
def test_capabilities_agree_with_their_definitions(div):
    assert div.supports("implicit_reward") == _implicit_reward_by_hand(div)
    h = div.h(torch.linspace(-8.0, 8.0, 33, dtype=torch.float64))
    usable = bool(torch.isfinite(h).all() and (h >= 0).all() and (h > 0).any())
    assert div.supports("score_weight") == usable


def test_known_capabilities():
    assert available_capabilities() == ["implicit_reward", "score_weight"]
    assert divmin.divergence("reverse_kl").supports("implicit_reward")  # DPO
    assert not divmin.divergence("total_variation").supports("score_weight")  # h = 0 a.e.
    assert "no policy" in divmin.divergence("neyman_chi2").why_not("implicit_reward")  # g bounded below
    assert "kind" in Sinkhorn().why_not("score_weight")
    with pytest.raises(ValueError, match="valid: implicit_reward, score_weight"):
        divmin.divergence("js").supports("flying")


def test_capability_checks_are_cached_per_member():
    why_not.cache_clear()
    div = divmin.divergence("alpha", alpha=0.4)
    for _ in range(5):
        div.supports("implicit_reward")
        divmin.divergence("alpha:0.4").supports("implicit_reward")  # equal by value: the same entry
    info = why_not.cache_info()
    assert (info.misses, info.hits) == (1, 9)


def test_require_names_the_argument_and_what_needs_it():
    with pytest.raises(ValueError, match=r"`config\.divergence`: neyman_chi2 cannot be used with f-DPO"):
        divmin.divergence("neyman_chi2").require("implicit_reward", "config.divergence")
    assert divmin.divergence("jeffreys").require("implicit_reward") == divmin.divergence("jeffreys")


@pytest.mark.parametrize("cost, metric", [("sqeuclidean", "sqeuclidean"), ("l1", "cityblock")])
def test_sinkhorn_member_matches_pot(cost, metric):
    """OT_eps = <T, C> + eps KL(T || a b^T) with POT's log-domain plan T; debiased S from three of them."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(7, 2, generator=gen, dtype=torch.float64), torch.randn(5, 2, generator=gen, dtype=torch.float64)
    eps = 0.5

    def ot_eps(u: torch.Tensor, v: torch.Tensor) -> float:
        a, b = np.full(len(u), 1 / len(u)), np.full(len(v), 1 / len(v))
        cmat = ot.dist(u.numpy(), v.numpy(), metric=metric)
        plan = ot.sinkhorn(a, b, cmat, reg=eps, method="sinkhorn_log", stopThr=1e-12, numItermax=10000)
        return float((plan * cmat).sum() + eps * (plan * np.log(plan / np.outer(a, b))).sum())

    plain = Sinkhorn(epsilon=eps, cost=cost, debias=False).between(x, y, tol=1e-10)
    assert float(plain) == pytest.approx(ot_eps(x, y), rel=1e-6)
    debiased = Sinkhorn(epsilon=eps, cost=cost).between(x, y, tol=1e-10)
    assert float(debiased) == pytest.approx(ot_eps(x, y) - 0.5 * ot_eps(x, x) - 0.5 * ot_eps(y, y), rel=1e-5)


def test_sinkhorn_member_checks_its_parameters():
    for kw, word in [({"epsilon": 0.0}, "epsilon"), ({"cost": "cosine"}, "cost"), ({"debias": 1}, "debias")]:
        with pytest.raises((ValueError, TypeError), match=word):
            Sinkhorn(**kw)
