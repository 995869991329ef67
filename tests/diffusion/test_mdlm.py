"""MDLM against independent oracles: the loss is the brute-force ELBO (tight at the exact denoiser),
the sampler's output follows the forward process and the model's distribution (exact by enumeration)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from divmin.data import MarkovLanguage, all_sequences
from divmin.diffusion import (MaskedDiffusionLM, MDLMConfig, MDLMTrainer, MDLMTransformer, mdlm_loss,
                              mdlm_reverse_step, mdlm_sample, subs_log_probs)
from divmin.engine import EngineConfig
from divmin.eval import generative_perplexity

V, L = 3, 3


class ExactDenoiser(nn.Module):
    """Logits of the true posterior p(x_l | unmasked tokens of z) of a joint ``p`` over all V^L sequences."""

    def __init__(self, p: torch.Tensor, vocab_size: int, length: int) -> None:
        super().__init__()
        self.seqs, self.p, self.V = all_sequences(vocab_size, length), p.double(), vocab_size
        self.dummy = nn.Parameter(torch.zeros(()))  # a device for MaskedDiffusionLM.sample

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        fits = ((z[:, None, :] == self.V) | (z[:, None, :] == self.seqs[None])).all(-1)  # (B, K)
        post = self.p[None] * fits
        post = post / post.sum(-1, keepdim=True)
        onehot = nn.functional.one_hot(self.seqs, self.V).double()  # (K, L, V)
        marg = torch.einsum("bk,klv->blv", post, onehot)
        return torch.cat([marg.log(), torch.zeros(*z.shape, 1, dtype=marg.dtype)], -1).float()


class Factorised(nn.Module):
    """Ignores its input: logits ``logits`` (L, V + 1) at every call."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits)

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.logits[: z.shape[1]].expand(z.shape[0], -1, -1)


def _joint(seed: int = 0) -> torch.Tensor:
    return torch.softmax(2 * torch.randn(V ** L, generator=torch.Generator().manual_seed(seed)), 0)


def _masks(x: torch.Tensor) -> list[tuple[torch.Tensor, int]]:
    """Every z obtained by masking a subset of x (1, L), with its number of masked positions."""
    out = []
    for subset in itertools.product([False, True], repeat=x.shape[1]):
        m = torch.tensor(subset)
        out.append((torch.where(m, V, x), int(m.sum())))
    return out


def _brute_nelbo_time_independent(lm: MaskedDiffusionLM, x: torch.Tensor) -> float:
    """sum over masks M of B(|M|, L - |M| + 1) sum_{l in M} -log p(x_l | z_M): int_0^1 t^{k-1} (1-t)^{L-k} dt."""
    total = 0.0
    for z, k in _masks(x):
        if k:
            nll = float(mdlm_loss(lm(z, torch.ones(1)), x, z, torch.ones(1), mask_id=V))  # t = 1: the plain sum
            total += math.gamma(k) * math.gamma(L - k + 1) / math.gamma(L + 1) * nll
    return total


def test_loss_at_the_exact_denoiser_is_the_exact_nll():
    """The continuous-time ELBO is tight at the true posterior: sum over masks = -log p(x) for every x."""
    p = _joint()
    lm = MaskedDiffusionLM(ExactDenoiser(p, V, L), V, L)
    seqs = all_sequences(V, L)
    for i in range(len(seqs)):
        assert _brute_nelbo_time_independent(lm, seqs[i:i + 1]) == pytest.approx(-math.log(p[i]), rel=1e-5)


def test_monte_carlo_loss_matches_the_elbo_by_quadrature():
    """For a time-conditioned network: mean of lm.loss (random t and masks) = Gauss-Legendre over t of the
    enumerated masks, for the loss as implemented and for the one written out here."""
    torch.manual_seed(0)
    lm = MaskedDiffusionLM(MDLMTransformer(V, L, width=16, depth=1, heads=2), V, L).eval()
    x = all_sequences(V, L)[[0, 5, 13, 26]]
    nodes, weights = np.polynomial.legendre.leggauss(12)  # the integrand is a polynomial in t times a smooth net
    zs = torch.stack([z[0] for i in range(len(x)) for z, _ in _masks(x[i:i + 1])])  # (4 * 2^L, L)
    xs = x.repeat_interleave(2 ** L, 0)
    brute = 0.0
    with torch.no_grad():
        for node, w in zip((nodes + 1) / 2, weights / 2):
            t = torch.full((len(zs),), float(node))
            logp = lm(zs, t).gather(-1, xs[..., None])[..., 0]  # (B, L)
            k = (zs == V).sum(-1)
            nll = -(logp * (zs == V)).sum(-1) / float(node)
            brute += float(w * (node ** k * (1 - node) ** (L - k) * nll).sum()) / len(x)
        gen = torch.Generator().manual_seed(1)
        draws = torch.cat([lm.loss(x.repeat(2500, 1), generator=gen, t_min=0.0) for _ in range(2)])
    se = float(draws.std()) / math.sqrt(len(draws))
    assert float(draws.mean()) == pytest.approx(brute, abs=5 * se)


def test_subs_zeroes_the_mask_and_copies_unmasked_tokens():
    logits = torch.randn(2, 3, V + 1)
    z = torch.tensor([[V, 1, V], [0, V, 2]])
    lp = subs_log_probs(logits, z, mask_id=V)
    assert torch.all(lp[..., V] == -math.inf)
    assert torch.allclose(lp.exp().sum(-1), torch.ones(2, 3))
    assert float(lp[0, 1, 1]) == 0.0 and float(lp[1, 2, 2]) == 0.0
    assert torch.allclose(lp[0, 0, :V], torch.log_softmax(logits[0, 0, :V], -1))


def _binomial_ok(freq: torch.Tensor, p: torch.Tensor, n: int) -> bool:
    return bool(((freq - p).abs() <= 5 * (p * (1 - p) / n).sqrt() + 1e-9).all())


@pytest.mark.parametrize("nfe", [1, 3, 8])
def test_sampler_draws_each_position_from_a_factorised_denoiser(nfe):
    pi = torch.softmax(torch.randn(2, V + 1, generator=torch.Generator().manual_seed(nfe)), -1)
    lm = MaskedDiffusionLM(Factorised(pi.log()), V, 2)
    n = 20000
    x = lm.sample(n, nfe=nfe, generator=torch.Generator().manual_seed(0))
    target = subs_log_probs(pi.log()[None], torch.full((1, 2), V), mask_id=V)[0, :, :V].exp()  # mask removed
    for pos in range(2):
        assert _binomial_ok(torch.bincount(x[:, pos], minlength=V).double() / n, target[pos].double(), n)


def test_reverse_steps_follow_the_forward_marginals():
    """From all-mask at t = 1, steps to s = 0.5 then 0.2: each position is masked with probability s and
    otherwise distributed as the denoiser's (factorised) distribution, as under the forward process."""
    pi = torch.softmax(torch.randn(V, generator=torch.Generator().manual_seed(4)), -1)
    n, gen = 40000, torch.Generator().manual_seed(0)
    lp = torch.cat([pi.log(), torch.tensor([-math.inf])]).expand(n, 1, V + 1)
    z = torch.full((n, 1), V)
    for t, s in ((1.0, 0.5), (0.5, 0.2)):
        z = mdlm_reverse_step(lp, z, t, s, mask_id=V, generator=gen)
        freq = torch.bincount(z[:, 0], minlength=V + 1).double() / n
        assert _binomial_ok(freq, torch.cat([(1 - s) * pi.double(), torch.tensor([s])]), n)


def _sampler_law(denoiser: nn.Module, nfe: int) -> torch.Tensor:
    """Exact law of the ancestral sampler's output over all V^L sequences: the (V+1)^L states' transition
    matrices, written out position by position, applied to the all-mask state."""
    states = all_sequences(V + 1, L)  # (S, L), the all-mask state last
    law = torch.zeros(len(states), dtype=torch.float64)
    law[-1] = 1.0
    with torch.no_grad():
        probs = subs_log_probs(denoiser(states, torch.ones(len(states))), states, mask_id=V).double().exp()
    za, zb = states[:, None, :], states[None, :, :]  # (S, 1, L), (1, S, L)
    for i in range(nfe, 0, -1):
        t, s = i / nfe, (i - 1) / nfe
        move = torch.stack([probs[:, pos, :][:, states[:, pos]] for pos in range(L)], -1)  # (S, S, L)
        factor = torch.where(za != V, (zb == za).double(), torch.where(zb == V, s / t, (t - s) / t * move))
        law = law @ factor.prod(-1)
    return law[(states < V).all(-1)]  # the all-unmasked states, in all_sequences(V, L) order


def test_sampler_law_is_exact_and_approaches_the_data_with_more_steps():
    p = _joint(1).double()
    den = ExactDenoiser(p, V, L)
    lm = MaskedDiffusionLM(den, V, L)
    law4 = _sampler_law(den, 4)
    n = 20000
    x = lm.sample(n, nfe=4, generator=torch.Generator().manual_seed(3))
    counts = torch.bincount(x[:, 0] * 9 + x[:, 1] * 3 + x[:, 2], minlength=27).double()
    keep = law4 > 1e-4
    chi2 = float(((counts[keep] - n * law4[keep]) ** 2 / (n * law4[keep])).sum())
    dof = int(keep.sum()) - 1
    assert chi2 < dof + 6 * math.sqrt(2 * dof)
    tv = [0.5 * float((_sampler_law(den, k) - p).abs().sum()) for k in (1, 4, 64)]
    assert tv[0] > tv[1] > tv[2] and tv[2] < 0.02  # one step = product of marginals; many steps -> p


def test_cache_skips_calls_without_changing_samples():
    calls = []

    def den(z, t):
        calls.append(1)
        return subs_log_probs(torch.zeros(*z.shape, V + 1), z, mask_id=V)

    a, used, _ = mdlm_sample(den, 2, 2, nfe=64, mask_id=V, generator=torch.Generator().manual_seed(0))
    b, used_nc, _ = mdlm_sample(den, 2, 2, nfe=64, mask_id=V, generator=torch.Generator().manual_seed(0), cache=False)
    assert torch.equal(a, b) and used_nc == 64 and used <= 5 and len(calls) == used + used_nc


def test_bad_inputs_name_the_argument():
    lm = MaskedDiffusionLM(MDLMTransformer(V, L, width=16, depth=1, heads=2), V, L)
    with pytest.raises(ValueError, match="`nfe` must be an int >= 1"):
        lm.sample(2, nfe=0)
    with pytest.raises(TypeError, match="`nfe` must be an int"):
        lm.sample(2, nfe=2.0)
    with pytest.raises(ValueError, match="`z_t`.*longer than the model's 3"):
        lm(torch.zeros(1, 4, dtype=torch.long), torch.ones(1))
    with pytest.raises(ValueError, match="`z_t` holds unknown token ids"):
        lm(torch.tensor([[0, 1, V + 1]]), torch.ones(1))
    with pytest.raises(ValueError, match="`x0` holds unknown token ids"):  # the mask is no data token
        lm.loss(torch.tensor([[0, V, 1]]))
    with pytest.raises(ValueError, match="`length`"):
        lm.sample(2, nfe=2, length=4)
    with pytest.raises(ValueError, match="`times` must decrease strictly from 1 to 0"):
        lm.sample(2, times=[1.0, 0.5, 0.5, 0.0])
    with pytest.raises(ValueError, match="exactly one of `nfe` and `times`"):
        lm.sample(2, nfe=2, times=[1.0, 0.0])
    with pytest.raises(ValueError, match="`eval_nfe`"):
        MDLMConfig(eval_nfe=0)
    with pytest.raises(ValueError, match="`data`.*longer than the model's"):
        MDLMTrainer(lm, torch.zeros(4, 5, dtype=torch.long))
    with pytest.raises(TypeError, match="`model`"):
        MDLMTrainer(lm.net, torch.zeros(4, 3, dtype=torch.long))


def test_trainer_runs_on_the_engine_and_reports_exact_metrics():
    lang = MarkovLanguage(4, L, order=1, seed=0)
    lm = MaskedDiffusionLM(MDLMTransformer(4, L, width=16, depth=1, heads=2), 4, L)
    cfg = MDLMConfig(batch_size=16, eval_samples=32, eval_nfe=2,
                     engine=EngineConfig(max_steps=3, log_every=3, progress=False, tensorboard=False))
    trainer = MDLMTrainer(lm, lang.sample, config=cfg, judge=lang)
    result = trainer.fit()
    assert result.optimizer_steps == {"denoiser": 3}
    assert {"eval/gen_ppl", "eval/entropy", "eval/nelbo_per_token", "loss"} <= set(result.metrics)
    assert 1.0 <= result.metrics["eval/gen_ppl"] and 0.0 <= result.metrics["eval/entropy"] <= math.log(4) + 1e-6
    assert trainer.model is trainer.engine.models["denoiser"]


def test_a_trained_mdlm_generates_the_markov_language_well_below_uniform():
    """End to end (~10 s): 500 steps on an order-1 chain (V=16, L=8; exp(entropy rate) = 4.0); at 16 NFEs the
    exact generative perplexity is far below uniform (16) and far below one-step sampling."""
    torch.manual_seed(0)
    lang = MarkovLanguage(16, 8, order=1, seed=0)
    lm = MaskedDiffusionLM(MDLMTransformer(16, 8, width=32, depth=2, heads=4), 16, 8)
    cfg = MDLMConfig(batch_size=64, lr=5e-3, engine=EngineConfig(max_steps=500, warmup_steps=20, log_every=500,
                                                                 progress=False, tensorboard=False))
    trainer, threads = MDLMTrainer(lm, lang.sample, config=cfg), torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only add overhead (and the CPUs are shared)
    try:
        trainer.fit()
        gen = torch.Generator().manual_seed(1)
        ppl = {nfe: generative_perplexity(trainer.model.sample(1000, nfe=nfe, generator=gen), lang) for nfe in (1, 16)}
    finally:
        torch.set_num_threads(threads)
    assert ppl[16] < 0.7 * 16 and ppl[16] < 0.5 * ppl[1]


def _mdlm_run(steps: int, out_dir) -> MDLMTrainer:
    torch.manual_seed(0)
    lang = MarkovLanguage(5, 4, order=2, seed=0)
    lm = MaskedDiffusionLM(MDLMTransformer(5, 4, width=16, depth=1, heads=2), 5, 4)
    engine = EngineConfig(max_steps=steps, log_every=1, progress=False, tensorboard=False, checkpoint_every=2,
                          out_dir=str(out_dir))
    return MDLMTrainer(lm, lang.sample, config=MDLMConfig(batch_size=8, engine=engine))


def test_resume_is_exact(tmp_path):
    straight = _mdlm_run(4, tmp_path / "straight")
    straight.fit()
    _mdlm_run(2, tmp_path / "split").fit()
    resumed = _mdlm_run(4, tmp_path / "split")
    result = resumed.fit(resume=True)
    assert [r["step"] for r in result.history] == [3, 4]  # it continued from the step-2 checkpoint
    for a, b in zip(resumed.model.parameters(), straight.model.parameters()):
        assert torch.equal(a, b)


def test_transformer_features_feed_its_head():
    net = MDLMTransformer(V, L, width=16, depth=1, heads=2, time_conditioning=True)
    z, t = torch.tensor([[0, V, 2]]), torch.tensor([0.3])
    assert net.features(z, t).shape == (1, L, 16)
    assert torch.equal(net(z, t), net.head(net.features(z, t)))
    assert not torch.equal(net(z, t), net(z, torch.tensor([0.9])))  # time enters when asked for


def test_a_custom_time_grid_and_the_path():
    """times = (1, tau, 0) follows the forward marginals at tau; the uniform grid equals nfe steps."""
    pi = torch.softmax(torch.randn(1, V + 1, generator=torch.Generator().manual_seed(5)), -1)
    den = MaskedDiffusionLM(Factorised(pi.log()), V, 1)
    n, tau = 40000, 0.3
    out = mdlm_sample(den, n, 1, mask_id=V, times=torch.tensor([1.0, tau, 0.0]), keep_path=True,
                      generator=torch.Generator().manual_seed(0))
    (s0, z_tau), (s1, z_0) = out.path
    assert (s0, s1) == (pytest.approx(tau), 0.0) and torch.equal(z_0, out.tokens)
    target = torch.cat([(1 - tau) * torch.softmax(pi[0, :V].double().log(), 0), torch.tensor([tau]).double()])
    assert _binomial_ok(torch.bincount(z_tau[:, 0], minlength=V + 1).double() / n, target, n)
    assert torch.equal(z_0[z_tau != V], z_tau[z_tau != V])  # unmasked tokens stay
    a = den.sample(50, nfe=4, generator=torch.Generator().manual_seed(2))
    b = den.sample(50, times=[1.0, 0.75, 0.5, 0.25, 0.0], generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
