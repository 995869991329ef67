"""Parity of `divmin.align.fdpo_loss` with TRL's own f-DPO loss code (test-only; skipped without trl).

TRL (checked against trl 1.16) computes the loss inline in ``DPOTrainer._compute_loss``: it sums the
per-token ``outputs.log_probs`` of a model call into sequence log-probs, takes
``logratio = logp - ref_logp`` (ref log-probs from the batch when ``precompute_ref_logps``), maps it
to an f-specific score and uses ``-logsigmoid(beta * (chosen_score - rejected_score))`` for
``loss_type="sigmoid"``. We call that method unbound on a minimal stand-in trainer and a fake model
whose ``log_probs`` are exactly the sequence log-probs we choose: no model, no download, no network.

TRL's scores are the paper's psi(u) = f_paper'(u), u = pi / pi_ref, up to an additive constant:
reverse KL ``log u`` (paper: log u + 1), forward KL ``1 - 1/u`` (paper: -1/u), JS
``log 2 + logsigmoid(log u)``, alpha ``(u^(c-1) - 1) / (c-1)`` with c = ``f_alpha_divergence_coef``.
The paper's alpha score is (1 - u^-a) / a, so c = 1 - a; divmin's ``alpha(alpha=a)`` is the paper's a.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

trl = pytest.importorskip("trl")
from trl import DPOConfig, DPOTrainer  # noqa: E402

import divmin  # noqa: E402
from divmin.align import fdpo_loss  # noqa: E402

F32 = torch.float32
BETA = 0.3


class _FakeModel:
    """Returns the fields `_compute_loss` reads; ``log_probs`` has one completion token per row."""

    def __init__(self, seq_logps: torch.Tensor):
        self.seq_logps = seq_logps  # (2B,) = [chosen; rejected]

    def __call__(self, **kwargs):
        n = kwargs["input_ids"].shape[0]
        assert n == self.seq_logps.shape[0]
        return SimpleNamespace(
            log_probs=self.seq_logps[:, None],
            entropy=torch.zeros(n, 1),
            mean_logits=torch.zeros(n, 1),
            is_top1=torch.zeros(n, 1, dtype=torch.bool),
        )


def _identity(x):
    return x


def _trl_loss(pc, pr, rc, rr, *, f_divergence_type, coef=0.5, beta=BETA):
    """TRL's loss, its gradient w.r.t. (pc, pr), and its logged metrics, for (B,) sequence log-probs."""
    policy = torch.cat([pc, pr]).detach().clone().requires_grad_(True)
    n = policy.shape[0]
    trainer = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=SimpleNamespace(device=torch.device("cpu"), gather=_identity, gather_for_metrics=_identity),
        aux_loss_enabled=False,
        precompute_ref_logps=True,
        ld_alpha=None,
        f_divergence_type=f_divergence_type,
        f_alpha_divergence_coef=coef,
        beta=beta,
        loss_types=["sigmoid"],
        loss_weights=[1.0],
        label_smoothing=0.0,
        use_weighting=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    inputs = {
        "input_ids": torch.ones(n, 2, dtype=torch.long),
        "attention_mask": torch.ones(n, 2, dtype=torch.long),
        "completion_mask": torch.tensor([[0, 1]] * n),  # shifted mask: the single completion token
        "ref_chosen_logps": rc,
        "ref_rejected_logps": rr,
    }
    loss = DPOTrainer._compute_loss(trainer, _FakeModel(policy), inputs, return_outputs=False)
    (grad,) = torch.autograd.grad(loss, policy)
    return loss.detach(), grad, trainer._metrics["train"]


def _trl_margins(pc, pr, rc, rr, **kw):
    """Per-pair beta * (chosen_score - rejected_score), recovered from single-pair losses softplus(-m)."""
    losses = torch.stack([_trl_loss(pc[i : i + 1], pr[i : i + 1], rc[i : i + 1], rr[i : i + 1], **kw)[0]
                          for i in range(pc.shape[0])]).double()
    return (-torch.log(torch.expm1(losses))).to(F32)


def _ours(pc, pr, rc, rr, divergence, beta=BETA):
    policy = torch.cat([pc, pr]).detach().clone().requires_grad_(True)
    b = pc.shape[0]
    out = fdpo_loss(policy[:b], policy[b:], rc, rr, divergence=divergence, beta=beta)
    (grad,) = torch.autograd.grad(out.loss, policy)
    return out, grad


def _logps(seed, n=8):
    g = torch.Generator().manual_seed(seed)
    ref = [-(5 + 10 * torch.rand(n, generator=g)) for _ in range(2)]
    pol = [r + 2 * (2 * torch.rand(n, generator=g) - 1) for r in ref]  # log-ratios in [-2, 2]
    return pol[0], pol[1], ref[0], ref[1]


def _alpha(a):
    return divmin.divergence("alpha", alpha=a)


# (our divergence, TRL f_divergence_type, TRL f_alpha_divergence_coef); alpha: coef = 1 - paper alpha
CASES = {
    "reverse_kl": ("reverse_kl", "reverse_kl", 0.5),
    "forward_kl": ("forward_kl", "forward_kl", 0.5),
    "js": ("js", "js_divergence", 0.5),
    "alpha0.3": (_alpha(0.3), "alpha_divergence", 0.7),
    "alpha0.5": (_alpha(0.5), "alpha_divergence", 0.5),
    "alpha0.7": (_alpha(0.7), "alpha_divergence", 0.3),
}


def test_trl_still_has_the_f_divergence_config_fields():
    fields = {f.name: f for f in dataclasses.fields(DPOConfig)}
    assert fields["f_divergence_type"].default == "reverse_kl"
    assert fields["f_alpha_divergence_coef"].default == 0.5


@pytest.mark.parametrize("case", sorted(CASES))
def test_loss_gradient_and_margins_match_trl(case):
    div, f_type, coef = CASES[case]
    pc, pr, rc, rr = _logps(seed=sorted(CASES).index(case))
    trl_loss, trl_grad, _ = _trl_loss(pc, pr, rc, rr, f_divergence_type=f_type, coef=coef)
    out, grad = _ours(pc, pr, rc, rr, div)
    torch.testing.assert_close(out.loss, trl_loss)
    torch.testing.assert_close(grad, trl_grad)
    # the per-pair margins agree exactly: the per-response constants (g(1) vs TRL's f'(1) = 0) cancel
    torch.testing.assert_close(out.chosen_rewards - out.rejected_rewards,
                               _trl_margins(pc, pr, rc, rr, f_divergence_type=f_type, coef=coef),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", sorted(CASES))
def test_per_response_rewards_match_trl_scores_up_to_a_constant(case):
    div, f_type, coef = CASES[case]
    pc, _, rc, _ = _logps(seed=10)
    # rejected responses at the reference (u = 1), where every TRL score is 0: TRL margin = beta * score(chosen)
    rr = pr = torch.full_like(rc, -7.0)
    trl_scores = _trl_margins(pc, pr, rc, rr, f_divergence_type=f_type, coef=coef)
    out, _ = _ours(pc, pr, rc, rr, div)
    offset = out.chosen_rewards - trl_scores  # = beta * g(1), the same for every response
    torch.testing.assert_close(offset, out.rejected_rewards, rtol=1e-4, atol=1e-5)
    assert offset.std() < 1e-4


@pytest.mark.parametrize("paper_alpha", [0.3, 0.7])
def test_alpha_coefficient_must_be_mapped(paper_alpha):
    """divmin alpha(a) == TRL coef 1 - a; passing a unmapped gives a different loss (for a != 0.5)."""
    pc, pr, rc, rr = _logps(seed=20)
    ours = _ours(pc, pr, rc, rr, _alpha(paper_alpha))[0].loss
    mapped = _trl_loss(pc, pr, rc, rr, f_divergence_type="alpha_divergence", coef=1 - paper_alpha)[0]
    unmapped = _trl_loss(pc, pr, rc, rr, f_divergence_type="alpha_divergence", coef=paper_alpha)[0]
    torch.testing.assert_close(ours, mapped)
    assert abs(ours - unmapped) > 1e-3, (ours, unmapped)
    # the unmapped TRL coefficient a is our alpha(1 - a)
    torch.testing.assert_close(_ours(pc, pr, rc, rr, _alpha(1 - paper_alpha))[0].loss, unmapped)


@pytest.mark.parametrize("case", sorted(CASES))
def test_trl_logs_dpo_rewards_whatever_f_while_ours_are_f_specific(case):
    div, f_type, coef = CASES[case]
    pc, pr, rc, rr = _logps(seed=30)
    _, _, metrics = _trl_loss(pc, pr, rc, rr, f_divergence_type=f_type, coef=coef)
    trl_chosen, trl_rejected = BETA * (pc - rc), BETA * (pr - rr)
    assert metrics["rewards/chosen"] == [pytest.approx(trl_chosen.mean().item(), rel=1e-5)]
    assert metrics["rewards/rejected"] == [pytest.approx(trl_rejected.mean().item(), rel=1e-5)]
    assert metrics["rewards/margins"] == [pytest.approx((trl_chosen - trl_rejected).mean().item(), rel=1e-5)]
    out, _ = _ours(pc, pr, rc, rr, div)
    # ours are beta * g(pi_ref / pi): never TRL's logged value, not even for reverse KL (g = log u + 1)
    assert not torch.allclose(out.chosen_rewards, trl_chosen, atol=1e-3)
    if case == "reverse_kl":  # ... where they differ by the constant beta, which cancels in the margin
        torch.testing.assert_close(out.chosen_rewards, trl_chosen + BETA)
        torch.testing.assert_close(out.chosen_rewards - out.rejected_rewards, trl_chosen - trl_rejected)
    else:
        assert not torch.allclose(out.chosen_rewards - out.rejected_rewards, trl_chosen - trl_rejected, atol=1e-3)
