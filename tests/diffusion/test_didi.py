"""DiDi-Instruct against independent oracles: the policy-gradient estimate equals the exact gradient of the
integral divergence (enumerated marginals, quadrature over t), the discriminator's log-odds converge to the
exact log ratio, and the sampler / normalisation / trainer behave as documented."""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from divmin.data import MarkovLanguage, all_sequences
from divmin.diffusion import (DiDiConfig, DiDiTrainer, MaskedDiffusionLM, MaskedDiscriminator, MDLMTransformer,
                              group_normalize, guided_sample, integral_policy_loss, mdlm_sample, path_log_prob,
                              subs_log_probs)
from divmin.divergences import divergence
from divmin.engine import EngineConfig
from divmin.estimators import logistic_discriminator_loss

from .._resume import assert_resumes_exactly

V, L = 2, 2
SEQS = all_sequences(V, L)  # (4, 2)


def _kernel(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(N, K) forward-process probabilities q(z_i | x_k) at times t (N,), for every clean sequence x_k."""
    masked = (z == V)[:, None, :]
    same = (z[:, None, :] == SEQS[None]).double()
    per = torch.where(masked, t.double()[:, None, None], (1 - t.double())[:, None, None] * same)
    return per.prod(-1)


def _all_states() -> torch.Tensor:
    return all_sequences(V + 1, L)  # every masked state (9, 2)


def _exact_integral(q: torch.Tensor, p: torch.Tensor, name: str) -> torch.Tensor:
    """int_0^1 D_f(P_t || Q_t) dt by 48-node Gauss-Legendre over t, marginals enumerated over all states."""
    f = divergence(name).base()
    nodes, weights = np.polynomial.legendre.leggauss(48)
    states, total = _all_states(), q.new_zeros(())
    for node, w in zip((nodes + 1) / 2, weights / 2):
        k = _kernel(states, torch.full((len(states),), float(node)))  # (9, 4)
        qt, pt = k @ q, k @ p
        total = total + float(w) * (qt * f.f(pt.log() - qt.log())).sum()
    return total


@pytest.mark.parametrize("name", ["integral_reverse_kl", "integral_forward_kl", "integral_f:js"])
def test_policy_gradient_matches_the_exact_integral_gradient(name):
    """Student: explicit softmax over the 4 sequences. Monte Carlo over x0 ~ Q, t ~ U(0,1), x_t, with the exact
    log r_t as the 'discriminator': the surrogate's gradient matches autograd of the exact integral (5 SE)."""
    gen = torch.Generator().manual_seed(0)
    theta = torch.randn(4, generator=gen, dtype=torch.float64).requires_grad_(True)
    p = torch.softmax(1.5 * torch.randn(4, generator=gen, dtype=torch.float64), 0)
    exact = torch.autograd.grad(_exact_integral(torch.softmax(theta, 0), p, name), theta)[0]
    n = 200_000
    q = torch.softmax(theta, 0)
    idx = torch.multinomial(q.detach(), n, replacement=True, generator=gen)
    t = torch.rand(n, generator=gen, dtype=torch.float64)
    z = torch.where(torch.rand(n, L, generator=gen, dtype=torch.float64) < t[:, None], V, SEQS[idx])
    k = _kernel(z, t)
    log_r = (k @ p).log() - (k @ q.detach()).log()
    logq = torch.log_softmax(theta, 0)[idx]
    loss, rewards = integral_policy_loss(logq, log_r, divergence=name)
    est = torch.autograd.grad(loss, theta)[0]
    coef = -rewards  # g(r) per sample; per-sample gradient g_i (e_{x_i} - q)
    per = coef[:, None] * (torch.nn.functional.one_hot(idx, 4).double() - q.detach()[None])
    se = per.std(0) / math.sqrt(n)
    assert exact.abs().max() > 0.02  # a gradient worth matching
    assert torch.all((est - exact).abs() < 5 * se + 1e-4), (est, exact, se)


def test_the_grouped_estimate_points_downhill():
    """With grouped normalisation (a biased, rescaled estimate) the step still lowers the exact integral KL."""
    gen = torch.Generator().manual_seed(1)
    theta = torch.randn(4, generator=gen, dtype=torch.float64).requires_grad_(True)
    p = torch.softmax(1.5 * torch.randn(4, generator=gen, dtype=torch.float64), 0)
    exact = torch.autograd.grad(_exact_integral(torch.softmax(theta, 0), p, "integral_reverse_kl"), theta)[0]
    g, groups = 4, 20_000
    q = torch.softmax(theta, 0)
    idx = torch.multinomial(q.detach(), g * groups, replacement=True, generator=gen)
    t = torch.rand(groups, generator=gen, dtype=torch.float64).repeat_interleave(g)
    z = torch.where(torch.rand(g * groups, L, generator=gen, dtype=torch.float64) < t[:, None], V, SEQS[idx])
    k = _kernel(z, t)
    log_r = (k @ p).log() - (k @ q.detach()).log()
    loss, _ = integral_policy_loss(torch.log_softmax(theta, 0)[idx], log_r, group_size=g, clip=3.0)
    est = torch.autograd.grad(loss, theta)[0]
    assert float(torch.nn.functional.cosine_similarity(est, exact, 0)) > 0.9


def test_discriminator_log_odds_converge_to_the_exact_log_ratio():
    """Logistic training on noised samples of two known laws: the logit approaches log P_t / Q_t on every state."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(2)
    p = torch.softmax(1.5 * torch.randn(4, generator=gen, dtype=torch.float64), 0)
    q = torch.softmax(1.5 * torch.randn(4, generator=gen, dtype=torch.float64), 0)
    disc = MaskedDiscriminator(MDLMTransformer(V, L, width=16, depth=1, heads=2), trainable_blocks=None, hidden=32)
    opt = torch.optim.Adam(disc.parameters(), lr=3e-3)
    n = 512
    for _ in range(200):
        x = torch.cat([SEQS[torch.multinomial(q, n, True, generator=gen)],
                       SEQS[torch.multinomial(p, n, True, generator=gen)]])
        t = torch.rand(2 * n, generator=gen)
        z = torch.where(torch.rand(2 * n, L, generator=gen) < t[:, None], V, x)
        c = disc(z, t)
        loss = logistic_discriminator_loss(c[:n], c[n:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    states = _all_states()
    err, base = [], []
    with torch.no_grad():
        for tv in (0.2, 0.5, 0.8):
            t = torch.full((len(states),), tv)
            k = _kernel(states, t)
            qt, pt = k @ q, k @ p
            exact = (pt.log() - qt.log()).float()
            w = (0.5 * (pt + qt)).float()
            err.append(float((w * (disc(states, t) - exact).abs()).sum()))
            base.append(float((w * exact.abs()).sum()))
    assert max(base) > 0.3  # the laws differ
    assert max(err) < 0.12 and sum(err) < 0.25 * sum(base), (err, base)


class _Factorised(nn.Module):
    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits)

    def forward(self, z, t):
        return subs_log_probs(self.logits.expand(z.shape[0], -1, -1), z, mask_id=V)


def test_path_log_prob_sums_the_tokens_drawn_at_each_step():
    logits = torch.randn(L, V + 1)
    den = _Factorised(logits)
    lp = torch.log_softmax(logits[:, :V], -1)
    states = [torch.tensor([[V, V]]), torch.tensor([[1, V]]), torch.tensor([[1, 0]])]
    got = path_log_prob(den, states, [1.0, 0.4, 0.0], mask_id=V)
    assert float(got.detach()) == pytest.approx(float(lp[0, 1] + lp[1, 0]), abs=1e-6)
    got.sum().backward()  # differentiable, finite
    assert torch.isfinite(den.logits.grad).all()


def test_group_normalize_standardises_each_group():
    r = torch.randn(12, generator=torch.Generator().manual_seed(0)) * 5
    out = group_normalize(r, 4, clip=1.2)
    ref = r.numpy().reshape(3, 4)
    ref = np.clip((ref - ref.mean(1, keepdims=True)) / (ref.std(1, keepdims=True) + 1e-6), -1.2, 1.2)
    assert np.allclose(out.numpy(), ref.reshape(-1), atol=1e-5)
    with pytest.raises(ValueError, match="`group_size`"):
        group_normalize(r, 1)
    with pytest.raises(ValueError, match="divisible by `group_size`"):
        group_normalize(r, 5)


class _CountZeros(nn.Module):
    """A 'discriminator' that likes token 0: logit = number of 0 tokens (soft: their probability mass)."""

    def forward(self, z, t):
        return (z == 0).float().sum(-1)

    def forward_soft(self, probs, t):
        return probs[..., 0].sum(-1)


def test_guided_sampler_reduces_to_the_plain_one_and_tilts_toward_the_reward():
    den = MaskedDiffusionLM(_Factorised(torch.zeros(4, V + 1)), V, 4)
    plain = mdlm_sample(den, 500, 4, mask_id=V, nfe=4, cache=False, generator=torch.Generator().manual_seed(0)).tokens
    same = guided_sample(den, _CountZeros(), 500, 4, mask_id=V, nfe=4, guidance_scale=0.0, best_of=1,
                         generator=torch.Generator().manual_seed(0))
    assert torch.equal(plain, same.tokens) and same.calls == 4 and same.disc_calls == 0
    tilted = guided_sample(den, _CountZeros(), 2000, 4, mask_id=V, nfe=4, guidance_scale=2.0, switch=0.0, best_of=1,
                           generator=torch.Generator().manual_seed(1))
    best = guided_sample(den, _CountZeros(), 2000, 4, mask_id=V, nfe=4, guidance_scale=0.0, switch=1.0, best_of=4,
                         generator=torch.Generator().manual_seed(1))
    assert float((tilted.tokens == 0).float().mean()) > 0.7  # 0.5 without guidance
    assert float((best.tokens == 0).float().mean()) > 0.7 and best.disc_calls == 16


def _tiny(steps: int = 2, **kw) -> tuple[DiDiTrainer, MarkovLanguage]:
    torch.manual_seed(0)
    lang = MarkovLanguage(4, 5, order=1, seed=0)
    teacher = MaskedDiffusionLM(MDLMTransformer(4, 5, width=16, depth=2, heads=2), 4, 5)
    cfg = DiDiConfig(batch_size=8, group_size=4, teacher_pool=32, teacher_nfe=4, eval_samples=16, eval_nfe=2,
                     lr_student=1e-3, lr_discriminator=1e-3, **kw,
                     engine=EngineConfig(max_steps=steps, log_every=steps, progress=False, tensorboard=False))
    return DiDiTrainer(teacher=teacher, config=cfg, judge=lang), lang


def test_student_ema_is_the_engine_ema_and_copies_buffers():
    """The EMA follows the student's parameters (decay rule of divmin.engine.ema_update) and copies its buffers
    (before the shared EMA, DiDi's left a student's buffers at their initial values)."""
    torch.manual_seed(0)
    teacher = MaskedDiffusionLM(MDLMTransformer(4, 5, width=16, depth=1, heads=2), 4, 5)
    student = copy.deepcopy(teacher)
    student.net.register_buffer("calls", torch.zeros(()))

    def count(module, args, out):  # a buffer that changes at every forward
        module.calls.add_(1)

    student.net.register_forward_hook(count)
    start = [p.detach().clone() for p in student.parameters()]
    cfg = DiDiConfig(batch_size=4, group_size=4, teacher_pool=8, teacher_nfe=2, ema_decay=0.5, lr_student=1e-3,
                     engine=EngineConfig(max_steps=1, log_every=1, progress=False, tensorboard=False))
    trainer = DiDiTrainer(student, teacher=teacher, config=cfg)
    trainer.fit()
    assert float(trainer.student.net.calls) > 0
    assert float(trainer.student_ema.net.calls) == float(trainer.student.net.calls)
    for p0, p, pe in zip(start, trainer.student.parameters(), trainer.student_ema.parameters()):
        torch.testing.assert_close(pe, 0.5 * p0 + 0.5 * p.detach())  # one update: ema = d start + (1 - d) new


@pytest.mark.parametrize("kw", [{}, {"grouped_normalization": False, "intermediate_matching": False,
                                     "divergence": "integral_forward_kl"}])
def test_trainer_runs_on_the_engine(kw):
    trainer, _ = _tiny(**kw)
    for a, b in zip(trainer.student.parameters(), trainer.teacher.parameters()):
        assert torch.equal(a, b)  # the student starts as the teacher
    result = trainer.fit()
    assert result.optimizer_steps == {"student": 2, "discriminator": 2}
    assert {"eval/gen_ppl", "eval/entropy", "disc/loss", "student/reward"} <= set(result.metrics)
    assert all(math.isfinite(v) for v in result.metrics.values())
    moved = [not torch.equal(a, b) for a, b in zip(trainer.student.parameters(), trainer.teacher.parameters())]
    assert any(moved)
    ema = [not torch.equal(a, b) for a, b in zip(trainer.student_ema.parameters(), trainer.student.parameters())]
    assert any(ema)  # the EMA lags the student
    x = trainer.sample(6, nfe=2, guided=True, generator=torch.Generator().manual_seed(0))
    assert x.shape == (6, 5) and bool(((x >= 0) & (x < 4)).all())


def test_bad_inputs_give_clear_errors():
    trainer, _ = _tiny()
    with pytest.raises(ValueError, match="`nfe` must be an int >= 1"):
        trainer.sample(2, nfe=0)
    with pytest.raises(ValueError, match="`nfe` must be an int >= 1"):
        trainer.sample(2, nfe=0, guided=True)
    with pytest.raises(ValueError, match="`z_t`.*longer than the model's 5"):
        trainer.student(torch.zeros(1, 6, dtype=torch.long), torch.ones(1))
    with pytest.raises(ValueError, match="`x0` holds unknown token ids"):
        trainer.student.noise(torch.tensor([[0, 1, 9, 0, 0]]), torch.ones(1))
    with pytest.raises(ValueError, match=r"`divergence`: reverse_kl is of kind 'f'.*integral_forward_kl, "
                                         r"integral_reverse_kl"):
        DiDiConfig(divergence="reverse_kl")
    with pytest.raises(ValueError, match="unknown divergence 'nope'"):
        DiDiConfig(divergence="nope")
    with pytest.raises(ValueError, match="multiple of `group_size`"):
        DiDiConfig(batch_size=10, group_size=4)
    with pytest.raises(ValueError, match="`eval_nfe`"):
        DiDiConfig(eval_nfe=0)
    with pytest.raises(TypeError, match="`teacher`"):
        DiDiTrainer(teacher=trainer.teacher.net)
    with pytest.raises(ValueError, match="`student`"):
        DiDiTrainer(MaskedDiffusionLM(MDLMTransformer(4, 6, width=16, depth=1, heads=2), 4, 6),
                    teacher=trainer.teacher)
    with pytest.raises(TypeError, match="`trunk`"):
        MaskedDiscriminator(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="kind"):
        integral_policy_loss(torch.zeros(2), torch.zeros(2), divergence="js")


def test_resume_is_exact(tmp_path):
    def run(out_dir, steps, resume=False):
        trainer, _ = _tiny(steps, grouped_normalization=False)
        trainer.config.engine = dataclasses.replace(trainer.config.engine, out_dir=str(out_dir), log_every=1,
                                                    checkpoint_every=2)
        result = trainer.fit(resume=resume)
        return trainer.student_ema, result

    assert_resumes_exactly(run, tmp_path)


def test_soft_discriminator_on_one_hot_rows_equals_it_on_ids_and_refuses_non_distributions():
    torch.manual_seed(0)
    disc = MaskedDiscriminator(MDLMTransformer(V, L, width=16, depth=1, heads=2), hidden=8)
    z = torch.randint(0, V + 1, (3, L))
    t = torch.rand(3)
    one_hot = torch.nn.functional.one_hot(z, V + 1).float()
    torch.testing.assert_close(disc.forward_soft(one_hot, t), disc(z, t), rtol=1e-5, atol=1e-6)
    soft = torch.softmax(torch.randn(3, L, V + 1), -1)
    assert disc.forward_soft(soft, t).isfinite().all()  # softmax rows (sums off 1 by rounding) pass
    nan = one_hot.masked_fill(z[..., None] == 0, float("nan"))
    negative = one_hot * 1.5 - 0.5 * one_hot.roll(1, -1)  # rows still summing to 1, one entry < 0
    for bad in (one_hot * 1e30, one_hot * 0.5, negative, nan):
        with pytest.raises(ValueError, match="`probs`"):
            disc.forward_soft(bad, t)
