"""f-DPO at large log-ratios: exact up to where each member's own g overflows, and only clamped there (issue 26).

Summed sequence log-ratios reach hundreds in real training. The oracle is written here, independently of
divmin, from DESIGN.md's table: g(t) and dg/dt as float64 closed forms in t = log r = log(pi_ref / pi), and
the limit of each member where |g| or |g'| reaches max / 8 (divmin's documented headroom).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import divmin
from divmin.align import fdpo_loss

F32, F64, BF16 = torch.float32, torch.float64, torch.bfloat16
BETA = 0.1
LN2 = math.log(2.0)


_sigmoid = torch.sigmoid


def _softplus(t):  # log(1 + e^t) without F.softplus's linear cut-over at t > 20
    return torch.logaddexp(torch.zeros_like(t), t)


# name -> (member, g(t), g'(t), limit(dtype) = (lo, hi) where |g| or |g'| reaches max / 8), float64 forms
def _exp_limit(rate, scale=1.0):  # |g| ~ scale * e^{rate t}: reaches M at t = log(M / scale) / rate
    return lambda m: math.log(m / scale) / rate


def _lin_limit(slope=1.0):  # |g| ~ slope * |t|
    return lambda m: m / slope


def _alpha(a):
    # g = (1 - r^a)/a, g' = -r^a: for a < 1, |g| ~ r^a / a is the larger one
    return (divmin.divergence("alpha", alpha=a), lambda t: -torch.expm1(a * t) / a, lambda t: -torch.exp(a * t),
            (None, _exp_limit(a, 1.0 / min(a, 1.0))))


def _gjs(b):
    return (divmin.divergence("generalized_js", beta=b),
            lambda t: -(1 - b) * torch.logaddexp(t + math.log(b), torch.full_like(t, math.log(1 - b))),
            lambda t: -(1 - b) * b / (b + (1 - b) * torch.exp(-t)), (None, _lin_limit(1 - b)))


def _skew_rkl(s):
    w = 1 - s
    return (divmin.divergence("skew_reverse_kl", skew=s),
            lambda t: -torch.logaddexp(t + math.log(w), torch.full_like(t, math.log(s))) + w / (w + s * torch.exp(-t)),
            lambda t: -((w / (w + s * torch.exp(-t))) ** 2),  # -w s r / (w r + s)^2 + ...: written uncancelled
            (None, _lin_limit()))


MEMBERS = {
    "reverse_kl": ("reverse_kl", lambda t: 1 - t, lambda t: -torch.ones_like(t), (_lin_limit(), _lin_limit())),
    "forward_kl": ("forward_kl", lambda t: -torch.exp(t), lambda t: -torch.exp(t), (None, _exp_limit(1.0))),
    "js": ("js", lambda t: LN2 - _softplus(t), lambda t: -_sigmoid(t), (None, _lin_limit())),
    "jeffreys": ("jeffreys", lambda t: 1 - torch.exp(t) - t, lambda t: -torch.exp(t) - 1,
                 (_lin_limit(), _exp_limit(1.0))),
    "pearson_chi2": ("pearson_chi2", lambda t: 1 - torch.exp(2 * t), lambda t: -2 * torch.exp(2 * t),
                     (None, _exp_limit(2.0, 2.0))),
    "squared_hellinger": ("squared_hellinger", lambda t: 1 - torch.exp(t / 2), lambda t: -torch.exp(t / 2) / 2,
                          (None, _exp_limit(0.5, 1.0))),
    "softened_forward_kl": ("softened_forward_kl", lambda t: _softplus(t) - LN2 - torch.exp(t),
                            lambda t: -torch.exp(t) * _sigmoid(t), (None, _exp_limit(1.0))),  # -r^2/(1+r)
    "alpha0.3": _alpha(0.3),
    "alpha0.7": _alpha(0.7),
    "alpha2": _alpha(2.0),
    "generalized_js0.1": _gjs(0.1),
    "generalized_js0.9": _gjs(0.9),
    "skew_reverse_kl0.1": _skew_rkl(0.1),
}


def test_every_admissible_member_is_covered():
    admissible = {n for n in divmin.available_divergences("f") if divmin.divergence(n).supports("implicit_reward")}
    members = {m if isinstance(m, str) else m.name for m, *_ in MEMBERS.values()}
    assert admissible == members


def _limits(name, dtype):
    m = torch.finfo(F32 if dtype == BF16 else dtype).max / 8
    lo, hi = MEMBERS[name][3]
    lo, hi = (math.inf if end is None else end(m) for end in (lo, hi))
    big = torch.finfo(F32 if dtype == BF16 else dtype).max  # no clamp needed where every float is fine
    return (-math.inf if lo > big else -lo), (math.inf if hi > big else hi)


def _grid(name, dtype):
    """log r values from 1e-3 to the member's limit on both sides, representable in ``dtype``."""
    lo, hi = _limits(name, dtype)
    cap = math.log10(torch.finfo(F32 if dtype == BF16 else dtype).max) - 1.0
    mags = [10.0 ** k for k in range(-3, int(cap) + 1)] + [43.0, 44.0, 50.0, 88.0, 300.0, 353.0, 354.0, 700.0]
    ts = [s * v for v in mags for s in (-1.0, 1.0) if lo < s * v < hi]
    inside = 1.0 - max(1e-3, 8 * torch.finfo(dtype).eps)  # still inside after rounding to `dtype`
    ts += [inside * end for end in (lo, hi) if math.isfinite(end)]
    return torch.tensor(sorted(set(ts)), dtype=F64).to(dtype)


def _run(member, t, dtype):
    """fdpo_loss per pair: chosen at log r = t (from log-probs <= 0), rejected at the reference (log r = 0)."""
    ref_c = torch.where(t > 0, torch.zeros_like(t), t)
    pol_c = torch.where(t > 0, -t, torch.zeros_like(t)).requires_grad_(True)
    zero = torch.zeros_like(t)
    losses, grads = [], []
    out = fdpo_loss(pol_c, zero, ref_c, zero, divergence=member, beta=BETA)
    for i in range(t.shape[0]):  # per-pair losses (the mean's gradient is 1/B of each)
        o = fdpo_loss(pol_c[i:i + 1], zero[:1], ref_c[i:i + 1], zero[:1], divergence=member, beta=BETA)
        (gr,) = torch.autograd.grad(o.loss, pol_c)
        losses.append(o.loss.detach().double())
        grads.append(gr[i].double())
    return out, torch.stack(losses), torch.stack(grads)


@pytest.mark.parametrize("dtype", [F32, BF16, F64], ids=str)
@pytest.mark.parametrize("name", sorted(MEMBERS))
def test_loss_rewards_and_gradient_are_exact_up_to_the_members_limit(name, dtype):
    member, g, dg, _ = MEMBERS[name]
    t = _grid(name, dtype)
    out, loss, grad = _run(member, t, dtype)
    t64 = t.double()  # the oracle: float64 closed forms at exactly the log-ratios fed in
    g0 = g(torch.zeros((), dtype=F64))
    margin = BETA * (g(t64) - g0)
    eps = torch.finfo(F32 if dtype == BF16 else dtype).eps  # computed in float32 from bf16 input
    tiny = torch.finfo(dtype).tiny
    # condition numbers: of g and h in t at most 2|t| (Pearson's r^2 grows fastest), and O(1) for
    # |t| > 1500 where only linearly growing members are still in range; of -log sigmoid(m) and of
    # sigmoid(-m) in m, at most max(m, 0)
    kappa = (1 + 2 * t64.abs().clamp(max=1500.0)) * (1 + margin.clamp(min=0))
    rtol = 8 * eps * kappa
    grad_rtol = rtol + 2 * torch.finfo(dtype).eps  # the gradient comes back in the input's dtype
    assert torch.isfinite(out.chosen_rewards).all() and torch.isfinite(loss).all()
    rewards = BETA * g(t64)
    assert _close(out.chosen_rewards, rewards, rtol, 8 * eps * BETA), (t, out.chosen_rewards, rewards)
    oracle_loss = torch.logaddexp(torch.zeros_like(margin), -margin)  # -log sigmoid(m)
    assert _close(loss, oracle_loss, rtol, tiny), (t, loss, oracle_loss)
    oracle_grad = _sigmoid(-margin) * BETA * dg(t64)  # d/d policy_chosen: t = ref - policy
    assert _close(grad, oracle_grad, grad_rtol, 2 * tiny / eps), (t, grad, oracle_grad)


def _close(got, want, rtol, atol):
    """|got - want| <= rtol |want| + atol elementwise (an exact 0 needs |got| <= atol, whatever rtol)."""
    scaled = torch.where(want == 0, torch.zeros_like(want), rtol * want.abs())
    return bool(((got.double() - want).abs() <= scaled + atol).all())


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("name", sorted(MEMBERS))
def test_the_clamp_is_the_members_own_limit(name, dtype):
    """g_range is where g or g' overflows with headroom 8, from the closed form: no narrower, no wider."""
    member = MEMBERS[name][0]
    member = divmin.divergence(member) if isinstance(member, str) else member
    lo, hi = member.g_range(dtype)
    want_lo, want_hi = _limits(name, dtype)
    for got, want in ((lo, want_lo), (hi, want_hi)):
        if math.isinf(want):
            assert got == want
        elif abs(want) > 1e6:  # linear growth: relative
            assert got == pytest.approx(want, rel=1e-3)
        else:  # exponential growth: in log r itself
            assert got == pytest.approx(want, abs=1e-3)


@pytest.mark.parametrize("name", sorted(MEMBERS))
def test_past_the_limit_the_reward_saturates_finite_with_zero_gradient(name):
    member = MEMBERS[name][0]
    member = divmin.divergence(member) if isinstance(member, str) else member
    lo, hi = member.g_range(F32)
    for end in (lo, hi):
        if math.isinf(end):
            continue
        t = torch.tensor([end * 0.999, end * 1.5], dtype=F32)
        at = torch.tensor([end], dtype=F32)
        out, loss, grad = _run(member, t, F32)
        edge, _, _ = _run(member, at, F32)
        assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
        assert out.chosen_rewards[1] == edge.chosen_rewards[0] and grad[1] == 0


@pytest.mark.parametrize("t, dpo", [(50.0, 0.006715348), (100.0, 4.5398899e-05), (500.0, 1.9287498e-22)])
def test_dpo_repro_from_the_issue(t, dpo):
    """Issue 26: policy log-prob t above the reference; the clamp at 43.4 gave 0.013002 at every t >= 43.4."""
    z = torch.zeros(1)
    pc = torch.tensor([t], requires_grad=True)
    out = fdpo_loss(pc, z, z, z, divergence="reverse_kl", beta=0.1)
    dpo_exact = -F.logsigmoid(torch.tensor(0.1 * t, dtype=F64)).item()
    assert out.loss.item() == pytest.approx(dpo_exact, rel=1e-5, abs=1e-45)
    assert out.loss.item() == pytest.approx(dpo, rel=1e-5, abs=1e-45)
    out.loss.backward()
    assert pc.grad.item() == pytest.approx(-0.1 * math.exp(-0.1 * t) / (1 + math.exp(-0.1 * t)), rel=1e-5, abs=1e-45)


@pytest.mark.parametrize("name", ["js", "alpha0.3", "pearson_chi2"])
def test_forward_mode_and_second_derivatives_follow_the_closed_form(name):
    """The reward's derivative is the member's -h (exact where autograd through g loses it); jvp,
    jacrev/jacfwd and Hessians must still work and agree with autograd through the float64 closed form."""
    from torch.func import hessian, jacfwd, jacrev

    member, g, dg, _ = MEMBERS[name]
    z = torch.zeros(3, dtype=F64)

    def loss(pc):
        return fdpo_loss(pc, z - 1, z, z, divergence=member, beta=0.5).loss

    x = torch.tensor([-1.0, -2.0, -3.0], dtype=F64)
    oracle = lambda pc: torch.logaddexp(torch.zeros(3, dtype=F64), -0.5 * (g(-pc) - g(1 - z))).mean()  # noqa: E731
    torch.testing.assert_close(jacrev(loss)(x), jacfwd(loss)(x))
    torch.testing.assert_close(jacrev(loss)(x), jacrev(oracle)(x))
    torch.testing.assert_close(hessian(loss)(x), hessian(oracle)(x))
