"""Registry-wide fixtures: every registered member (defaults) plus parameter variants."""

from __future__ import annotations

import pytest

import divmin

# Extra parameter values worth testing; a new member is covered by its defaults alone.
PARAM_VARIANTS: dict[str, list[dict]] = {
    "alpha": [{"alpha": a} for a in (-0.7, 0.0, 1e-6, 0.3, 0.8, 1.0 - 1e-6, 1.0, 1.6)],
    "generalized_js": [{"beta": 0.1}, {"beta": 0.9}],
    "skew_forward_kl": [{"skew": 0.0}, {"skew": 0.5}],
    "skew_reverse_kl": [{"skew": 0.0}, {"skew": 0.5}],
}


def all_members() -> list[divmin.Divergence]:
    out = [divmin.divergence(name) for name in divmin.available_divergences("f")]
    for name, variants in PARAM_VARIANTS.items():
        out += [divmin.divergence(name, **kw) for kw in variants]
    return out


MEMBERS = all_members()
MEMBER_IDS = [str(d) for d in MEMBERS]


def members(fn):
    """Parametrise a test over every registry member and variant."""
    return pytest.mark.parametrize("div", MEMBERS, ids=MEMBER_IDS)(fn)
