"""fdpo_loss: DPO as the reverse-KL case, the paper's closed-form scores, refusals, numerics."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import divmin
from divmin.align import fdpo_admissible, fdpo_loss

F64 = torch.float64


def _logps(seed=0, n=16):
    g = torch.Generator().manual_seed(seed)
    return [-(5 + 20 * torch.rand(n, generator=g, dtype=F64)) for _ in range(4)]


def test_reverse_kl_is_standard_dpo():
    pc, pr, rc, rr = _logps()
    out = fdpo_loss(pc, pr, rc, rr, divergence="reverse_kl", beta=0.3)
    dpo = -F.logsigmoid(0.3 * ((pc - rc) - (pr - rr))).mean()
    torch.testing.assert_close(out.loss, dpo)


# the f-DPO paper's scores psi(u), u = pi / pi_ref, written from the paper, not from divmin
PAPER_SCORES = {
    "reverse_kl": lambda u: torch.log(u) + 1,
    "forward_kl": lambda u: -1 / u,
    "js": lambda u: torch.log(2 * u / (1 + u)),
    "alpha(alpha=0.3)": lambda u: (1 - u**-0.3) / 0.3,
    "alpha(alpha=0.7)": lambda u: (1 - u**-0.7) / 0.7,
}


@pytest.mark.parametrize("name", sorted(PAPER_SCORES))
def test_margins_match_the_paper_closed_form_scores(name):
    div = divmin.divergence("alpha", alpha=float(name[12:15])) if name.startswith("alpha") else name
    g = torch.Generator().manual_seed(1)
    pc, pr, rc, rr = (-(1 + 3 * torch.rand(32, generator=g, dtype=F64)) for _ in range(4))
    out = fdpo_loss(pc, pr, rc, rr, divergence=div, beta=0.5)
    psi = PAPER_SCORES[name]
    margin = 0.5 * (psi(torch.exp(pc - rc)) - psi(torch.exp(pr - rr)))
    torch.testing.assert_close(out.chosen_rewards - out.rejected_rewards, margin)
    torch.testing.assert_close(out.loss, -F.logsigmoid(margin).mean())


def test_label_smoothing_is_the_conservative_loss():
    pc, pr, rc, rr = _logps(2)
    eps = 0.1
    d = 0.1 * ((pc - rc) - (pr - rr))
    out = fdpo_loss(pc, pr, rc, rr, label_smoothing=eps)
    torch.testing.assert_close(out.loss, (-(1 - eps) * F.logsigmoid(d) - eps * F.logsigmoid(-d)).mean())


@pytest.mark.parametrize("name", ["total_variation", "neyman_chi2", "softened_reverse_kl", "skew_forward_kl"])
def test_inadmissible_divergences_are_refused_with_a_reason(name):
    pc, pr, rc, rr = _logps()
    with pytest.raises(ValueError, match="cannot be used with f-DPO"):
        fdpo_loss(pc, pr, rc, rr, divergence=name)
    assert fdpo_admissible(name)[1]


@pytest.mark.parametrize("name", ["reverse_kl", "forward_kl", "js", "alpha", "pearson_chi2", "jeffreys"])
def test_extreme_bf16_log_ratios_stay_finite_with_gradients(name):
    pc = torch.tensor([-1.0, -400.0, -5.0], dtype=torch.bfloat16, requires_grad=True)
    pr = torch.tensor([-300.0, -2.0, -5.0], dtype=torch.bfloat16, requires_grad=True)
    ref = torch.tensor([-2.0, -3.0, -500.0], dtype=torch.bfloat16)
    out = fdpo_loss(pc, pr, ref, ref, divergence=name)
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(pc.grad.float()).all() and torch.isfinite(pr.grad.float()).all()


def test_gradient_pushes_chosen_up_and_rejected_down():
    g = torch.Generator().manual_seed(3)
    pc, pr, rc, rr = (-(1 + 3 * torch.rand(32, generator=g, dtype=F64)) for _ in range(4))
    pc, pr = pc.requires_grad_(), pr.requires_grad_()
    for name in ("reverse_kl", "forward_kl", "js"):
        pc.grad = pr.grad = None
        fdpo_loss(pc, pr, rc, rr, divergence=name).loss.backward()
        assert (pc.grad < 0).all() and (pr.grad > 0).all(), name


@pytest.mark.parametrize(
    "kwargs, err, word",
    [({"beta": 0.0}, ValueError, "beta"), ({"label_smoothing": 0.5}, ValueError, "label_smoothing"),
     ({"divergence": "nope"}, ValueError, "reverse_kl")],
)
def test_bad_arguments(kwargs, err, word):
    pc, pr, rc, rr = _logps()
    with pytest.raises(err, match=word):
        fdpo_loss(pc, pr, rc, rr, **kwargs)


def test_bad_tensors_name_the_argument():
    pc, pr, rc, rr = _logps()
    with pytest.raises(ValueError, match="ref_rejected_logps"):
        fdpo_loss(pc, pr, rc, rr[:3])
    with pytest.raises(TypeError, match="policy_chosen_logps"):
        fdpo_loss(pc.long(), pr, rc, rr)
    assert math.isfinite(fdpo_loss(pc, pr, rc, rr).loss.item())
