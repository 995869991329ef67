"""Parity with TRL: its DPO f-divergence scores (``tests/test_dpo_trainer.py`` before the 2025 DPO refactor,
``test_dpo_loss_alpha_div_f`` / ``test_dpo_loss_js_div_f``) and GKD's ``generalized_jsd_loss``
(``tests/experimental/test_gkd_trainer.py::TestGeneralizedJSDLoss``). TRL's real functions are called.

Deliberate differences, stated in each test and in docs/design.md:

* f-DPO: TRL logs DPO rewards whatever f; divmin's rewards are ``beta * g(pi_ref / pi)``. TRL's
  ``f_alpha_divergence_coef`` c is divmin's ``alpha(alpha=1 - c)``. The losses agree.
* GKD: TRL's ``reduction="batchmean"`` without labels divides the sum over positions by the batch size
  (dim 0); divmin's ``token_kd_loss`` is the mean over positions (B * T). With labels both divide by the
  counted positions. TRL's beta = 0 / 1 are forward / reverse KL; divmin names them (``generalized_js``
  takes beta in (0, 1)).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("trl")
gkd = pytest.importorskip("trl.experimental.gkd")

from divmin import divergence  # noqa: E402
from divmin.align import fdpo_loss  # noqa: E402
from divmin.distill import token_kd_loss  # noqa: E402
from tests.align.test_fdpo_trl_parity import CASES, _ours, _trl_loss  # noqa: E402

F32 = torch.float32
trl_gjsd = gkd.GKDTrainer.generalized_jsd_loss

# TRL's DPO test inputs: summed log-ratios 1020 and 699.9, DPOConfig's default beta = 0.1
TRL_DPO = dict(pc=[410.0, 0.1], pr=[810.5, 0.2], rc=[-610.0, -0.1], rr=[110.6, 0.5])


@pytest.mark.parametrize("case", sorted(CASES))
def test_dpo_f_divergence_on_trls_test_inputs(case):
    """Upstream only asserts a finite loss for alpha / JS; here loss and gradient must be TRL's, for every f."""
    div, f_type, coef = CASES[case]
    pc, pr, rc, rr = (torch.tensor(TRL_DPO[k], dtype=F32) for k in ("pc", "pr", "rc", "rr"))
    trl_loss, trl_grad, _ = _trl_loss(pc, pr, rc, rr, f_divergence_type=f_type, coef=coef, beta=0.1)
    out, grad = _ours(pc, pr, rc, rr, div, beta=0.1)
    torch.testing.assert_close(out.loss, trl_loss)
    torch.testing.assert_close(grad, trl_grad)
    if case == "reverse_kl":  # DPO: mean(-log sigmoid(0.1 * [320.1, 0.5])) = 0.33423 (0.68080 with a clamp at 43.4)
        assert out.loss.item() == pytest.approx(0.334230, abs=1e-6)
        assert grad[0].item() == pytest.approx(-0.5 * 0.1 * math.exp(-32.01), rel=1e-4)  # not saturated


def test_dpo_reverse_kl_is_trls_sigmoid_loss_with_label_smoothing():
    """TRL's conservative DPO (label_smoothing) on the same inputs, written from TRL's formula."""
    pc, pr, rc, rr = (torch.tensor(TRL_DPO[k], dtype=F32) for k in ("pc", "pr", "rc", "rr"))
    logits = (pc - rc) - (pr - rr)
    want = (-F.logsigmoid(0.1 * logits) * 0.9 - F.logsigmoid(-0.1 * logits) * 0.1).mean()
    got = fdpo_loss(pc, pr, rc, rr, divergence="reverse_kl", beta=0.1, label_smoothing=0.1).loss
    torch.testing.assert_close(got, want)


def _member(beta):
    return {0.0: "forward_kl", 1.0: "reverse_kl"}.get(beta) or divergence("generalized_js", beta=beta)


def _gkd_inputs(seed=0, shape=(2, 3, 5)):  # upstream setup_method: randn(batch 2, seq 3, vocab 5)
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_generalized_jsd_matches_trl(beta, temperature):
    """Loss and gradient against TRL's function, with labels (-100 masked) and without (batchmean over dim 0)."""
    student, teacher = _gkd_inputs()
    labels = torch.tensor([[1, -100, 3], [-100, -100, 0]])
    for lab in (None, labels):
        s1, s2 = student.clone().requires_grad_(True), student.clone().requires_grad_(True)
        want = trl_gjsd(s1, teacher, labels=lab, beta=beta, temperature=temperature)
        got = token_kd_loss(s2, teacher, divergence=_member(beta), labels=lab, temperature=temperature)
        if lab is None:  # TRL: sum / batch size; divmin: sum / positions
            got = got * student.shape[1]
        want.backward()
        got.backward()
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1.3e-6)  # upstream compares to 5 decimals
        torch.testing.assert_close(s2.grad, s1.grad, atol=1e-6, rtol=1e-5)


def test_generalized_jsd_num_items_in_batch_matches_trl():
    student, teacher = _gkd_inputs(1)
    labels = torch.tensor([[1, -100, 3], [2, -100, 0]])
    want = trl_gjsd(student, teacher, labels=labels, beta=0.3, num_items_in_batch=10)
    got = token_kd_loss(student, teacher, divergence=_member(0.3), labels=labels, num_items=10)
    torch.testing.assert_close(got, want)


def test_generalized_jsd_edge_cases_match_trl():
    """test_generalized_jsd_loss_edge_cases: P = (0.9, 0.1) teacher, Q = (0.1, 0.9) student; beta 1 is
    KL(student || teacher), beta 0 KL(teacher || student), to 5 decimals (upstream's ``round(..., 5)``)."""
    student = torch.log(torch.tensor([[0.1, 0.9]])).unsqueeze(0)
    teacher = torch.log(torch.tensor([[0.9, 0.1]])).unsqueeze(0)
    for beta, want in ((1.0, F.kl_div(F.log_softmax(teacher, -1), F.softmax(student, -1), reduction="batchmean")),
                       (0.0, F.kl_div(F.log_softmax(student, -1), F.softmax(teacher, -1), reduction="batchmean"))):
        got = token_kd_loss(student, teacher, divergence=_member(beta))
        assert round(abs(got.item() - want.item()), 5) == 0
        assert round(abs(got.item() - trl_gjsd(student, teacher, beta=beta).item()), 5) == 0


def test_generalized_jsd_zero_and_symmetry_as_trl():
    """test_uniform_distribution (5 decimals), test_zero_loss_for_identical_inputs (6), test_symmetry."""
    ones = torch.ones(1, 1, 5)
    assert round(abs(token_kd_loss(ones, ones, divergence=_member(0.5)).item()), 5) == 0
    same = _gkd_inputs(2)[0]
    assert round(abs(token_kd_loss(same, same, divergence=_member(0.5)).item()), 6) == 0
    student, teacher = _gkd_inputs()
    for beta, symmetric in ((0.1, False), (0.5, True)):
        st = token_kd_loss(student, teacher, divergence=_member(beta))
        ts = token_kd_loss(teacher, student, divergence=_member(beta))
        assert bool(torch.isclose(st, ts, rtol=1e-6, atol=0)) == symmetric
        assert bool(torch.isclose(trl_gjsd(student, teacher, beta=beta), trl_gjsd(teacher, student, beta=beta),
                                  rtol=1e-6, atol=0)) == symmetric
