"""One argument order everywhere: the model first, the target second, the value D(target || model).

Every function of two distributions gets the asymmetric forward KL, KL(P || Q) =
sum_x P log(P/Q), on inputs whose answer is written out by hand; a swap of the
two positional arguments would compute KL(Q || P) instead, which differs on these
inputs (checked first, so that every test here can fail).
"""

from __future__ import annotations

import math

import pytest
import torch

import divmin
from divmin.align import fdpg_loss, fdpo_loss
from divmin.cluster import depict_loss
from divmin.diffusion import fdistill_surrogate
from divmin.distill import fused_linear_kd_loss, sinkd_loss, token_kd_loss
from divmin.eval import acceptance_rate, exact_divergence, is_divergence, precision_recall, target_metrics

F64 = torch.float64
P = torch.tensor([0.9, 0.08, 0.02], dtype=F64)  # target
Q = torch.tensor([0.2, 0.3, 0.5], dtype=F64)  # model
KL_PQ = float((P * (P / Q).log()).sum())  # forward KL, the value every call must give
KL_QP = float((Q * (Q / P).log()).sum())  # what a swapped call would give


def test_the_inputs_tell_the_two_orders_apart():
    assert abs(KL_PQ - KL_QP) > 0.1


def test_categorical_divergence_and_the_member_method():
    got = divmin.categorical_divergence(Q.log()[None], P.log()[None], divergence="forward_kl")
    assert float(got) == pytest.approx(KL_PQ, rel=1e-12)
    got = divmin.categorical_divergence(model_logits=Q.log(), target_logits=P.log(), divergence="forward_kl")
    assert float(got) == pytest.approx(KL_PQ, rel=1e-12)
    assert float(divmin.divergence("forward_kl").categorical(Q.log(), P.log())) == pytest.approx(KL_PQ, rel=1e-12)


def test_divergence_is_keyword_only():
    with pytest.raises(TypeError):
        divmin.categorical_divergence(Q.log(), P.log(), "forward_kl")  # type: ignore[misc]
    with pytest.raises(TypeError):
        exact_divergence(Q.log(), P.log(), "forward_kl")  # type: ignore[misc]


def test_exact_and_importance_sampled_divergences():
    assert float(exact_divergence(Q.log(), P.log(), divergence="forward_kl")) == pytest.approx(KL_PQ, rel=1e-12)
    # every point once under a uniform proposal: the self-normalised weights are exactly Q
    uniform = torch.full((3,), -math.log(3.0), dtype=F64)
    got = is_divergence(Q.log(), P.log(), divergence="forward_kl", proposal_logps=uniform, log_z=0.0)
    assert got == pytest.approx(KL_PQ, rel=1e-12)
    metrics = target_metrics(Q.log(), P.log(), proposal_logps=uniform, log_z=0.0)
    assert metrics.kl_target_model == pytest.approx(KL_PQ, rel=1e-12)
    assert metrics.kl_model_target == pytest.approx(KL_QP, rel=1e-12)
    assert acceptance_rate(Q.log(), P.log(), log_z=0.0) == pytest.approx(float(1 / (P / Q).max()), rel=1e-12)


def test_distillation_losses():
    student, teacher = Q.log()[None].float(), P.log()[None].float()
    assert float(token_kd_loss(student, teacher, divergence="forward_kl")) == pytest.approx(KL_PQ, rel=1e-6)
    # identity heads: the logits are the hidden states
    eye = torch.eye(3)
    got = fused_linear_kd_loss(student, eye, teacher, eye, divergence="forward_kl")
    assert float(got) == pytest.approx(KL_PQ, rel=1e-6)


def test_depict_loss_takes_the_model_logits_first():
    got = depict_loss(Q.log()[None], P[None], divergence="forward_kl", prior=False)
    assert float(got) == pytest.approx(KL_PQ, rel=1e-12)


def test_sinkd_puts_the_student_on_the_rows_of_the_cost():
    s = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=F64)
    t = torch.tensor([[0.0, 0.0, 3.0], [1.0, 1.0, 0.0], [0.0, 2.0, 0.0]], dtype=F64)
    q, p = s.softmax(-1), t.softmax(-1)

    def reference(cost: torch.Tensor) -> float:  # the research code's loop, by hand
        k = torch.exp(-cost / 0.5)
        for _ in range(3):
            k = k / k.sum(1, keepdim=True)
            k = k / k.sum(0, keepdim=True)
        return float((k * cost).sum())

    cost = torch.cdist(q, p, p=1.0)  # rows: student predictions
    want, swapped = reference(cost), reference(cost.T)
    assert abs(want - swapped) > 1e-3
    got = sinkd_loss(s, t, epsilon=0.5, n_iters=3, temperature=1.0, mode="reference")
    assert float(got) == pytest.approx(want, rel=1e-10)


def test_fdpo_reward_is_g_of_ref_over_policy():
    # forward KL: g(r) = -r, so the implicit reward is -beta * pi_ref / pi
    pc, pr = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    rc, rr = torch.tensor([math.log(0.25)]), torch.tensor([math.log(0.5)])
    out = fdpo_loss(pc, pr, rc, rr, divergence="forward_kl", beta=1.0)
    assert float(out.chosen_rewards) == pytest.approx(-0.5)
    assert float(out.rejected_rewards) == pytest.approx(-2.0)


def test_fdpg_pseudo_reward_is_p_over_q():
    # forward KL: -g(r) = r = P / Q (DPG's importance weight)
    out = fdpg_loss(Q.log().float().requires_grad_(), P.log().float(), divergence="forward_kl", log_z=0.0)
    torch.testing.assert_close(out.pseudo_rewards, (P / Q).float())


def test_fdistill_surrogate_takes_the_fake_score_first():
    # forward KL: h(r) = r; the gradient through x_t is h(r) (s_Q - s_P) / B
    x = torch.zeros(2, 1, dtype=F64, requires_grad=True)
    s_q, s_p = torch.tensor([[1.0], [2.0]], dtype=F64), torch.tensor([[4.0], [0.0]], dtype=F64)
    log_r = torch.tensor([0.0, math.log(3.0)], dtype=F64)
    fdistill_surrogate(x, s_q, s_p, log_r, divergence="forward_kl", normalize=False).backward()
    torch.testing.assert_close(x.grad, torch.tensor([[1.0 * (1 - 4) / 2], [3.0 * (2 - 0) / 2]], dtype=F64))


def test_precision_recall_takes_the_model_samples_first():
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0], [10.0], [11.0], [12.0], [13.0]], dtype=F64)
    fake = torch.tensor([[0.5], [1.5], [2.5], [1.0], [2.0]], dtype=F64)  # covers one of the two real modes
    pr = precision_recall(fake, real, k=2)
    assert pr.precision == 1.0  # every model sample lies on the data
    assert pr.recall == 0.5  # half the data is missed
