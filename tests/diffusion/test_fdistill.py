"""`FDistillTrainer` on the engine: it runs on CPU, moves the generator toward the teacher, keeps its state."""

from __future__ import annotations

import math

import pytest
import torch

from divmin.diffusion import (
    EDMDenoiser,
    FDistillTrainer,
    FDistillConfig,
    GaussianMixtureTeacher,
    MLPBackbone,
    MLPGenerator,
)
from divmin.engine import EngineConfig
from divmin.eval import sliced_wasserstein


def _engine(steps: int, **kw) -> EngineConfig:
    return EngineConfig(max_steps=steps, log_every=steps, progress=False, tensorboard=False,
                        max_grad_norm=10.0, **kw)


def _setup(steps: int, **cfg):
    torch.manual_seed(0)
    teacher = GaussianMixtureTeacher(torch.tensor([[-2.0, 0.0], [2.0, 0.0]]), 0.3, torch.tensor([2.0, 1.0]))
    gen, fake = MLPGenerator(2, 32, 2, init_scale=3.0), EDMDenoiser(MLPBackbone(2, 32, 2), sigma_data=2.0)
    config = FDistillConfig(batch_size=128, critic_steps=2, lr_generator=1e-3, lr_critic=2e-3, sigma_max=2.0,
                            ema_decay=0.9, engine=_engine(steps, eval_every=steps), **cfg)
    return teacher, FDistillTrainer(gen, teacher, fake, config=config, sample_shape=(2,))


@pytest.mark.parametrize("feature_source,gan_weight", [("own", 1e-3), ("fake_score", 0.0)])
def test_runs_on_cpu_and_logs_finite_metrics(feature_source, gan_weight):
    _, fd = _setup(3, divergence="jeffreys", feature_source=feature_source, gan_weight=gan_weight, critic_warmup=2)
    result = fd.fit()
    assert result.step == 3 and result.optimizer_steps == {"generator": 3, "critic": 3 * 2 + 2}
    last = result.history[-1]
    for key in ("critic/dsm", "critic/disc", "gen/log_r", "gen/h", "eval/sliced_wasserstein"):
        assert math.isfinite(last[key]), key
    assert ("gen/gan" in last) == (gan_weight > 0)
    assert fd.sample(5).shape == (5, 2)
    assert not torch.equal(fd.ratio_mean, torch.ones(10))  # the per-bin EMA of r moved


def test_generator_moves_toward_the_teacher():
    teacher, fd = _setup(150, divergence="js")
    gen = torch.Generator().manual_seed(1)
    real = teacher.sample(2000, generator=gen)
    before = sliced_wasserstein(fd.sample(2000, ema=False, generator=gen), real, generator=gen)
    fd.fit()
    after = sliced_wasserstein(fd.sample(2000, generator=gen), real, generator=gen)
    assert after < 0.5 * before, (float(before), float(after))


def test_ema_generator_is_the_exponential_average_of_the_generator_trajectory(monkeypatch):
    from divmin.diffusion import _fdistill

    _, fd = _setup(4, divergence="reverse_kl")
    start = [p.detach().clone() for p in fd.generator.parameters()]
    trajectory = []  # generator weights right after each generator update, when the EMA takes them
    update_ema = _fdistill.ema_update

    def spy(ema, model, *, decay):
        trajectory.append([p.detach().clone() for p in model.parameters()])
        update_ema(ema, model, decay=decay)

    monkeypatch.setattr(_fdistill, "ema_update", spy)
    fd.fit()
    assert len(trajectory) == 4
    d = fd.config.ema_decay
    expected = start
    for weights in trajectory:  # ema <- d * ema + (1 - d) * p, from the initial weights
        expected = [d * e + (1 - d) * p for e, p in zip(expected, weights)]
    for p0, p, pe, want in zip(start, fd.generator.parameters(), fd.generator_ema.parameters(), expected):
        assert not torch.equal(p0, p.detach())  # Adam moved every tensor (all of them get gradients)
        torch.testing.assert_close(pe.detach(), want, rtol=1e-5, atol=1e-7)
        assert (pe.detach() - p.detach()).abs().max() > 1e-4 * p0.abs().max()  # the EMA lags the generator


def test_log_ratio_normalisation_uses_the_per_bin_ema_and_clamps():
    _, fd = _setup(1, ratio_ema=0.5, time_bins=2, ratio_clamp=(0.5, 4.0), logit_clamp=3.0, sigma_min=0.1)
    task = fd.make_task()
    sigma = torch.tensor([0.15, 0.2, 1.9, 1.5])  # bins in log sigma over [0.1, 2]: 0, 0, 1, 1
    logit = torch.tensor([math.log(2.0), math.log(2.0), 10.0, 10.0])  # the last two clamp to 3
    out = task._log_ratio(logit, sigma)
    expected_mean = torch.tensor([0.5 * 1 + 0.5 * 2.0, 0.5 * 1 + 0.5 * math.exp(3.0)])
    torch.testing.assert_close(fd.ratio_mean, expected_mean)
    raw = torch.tensor([math.log(2.0 / 1.5)] * 2 + [3.0 - math.log(expected_mean[1])] * 2)
    torch.testing.assert_close(out, raw.clamp(math.log(0.5), math.log(4.0)))


def test_fake_score_network_learns_a_gaussian_score_by_dsm():
    """DSM's optimum is the noised score: for N(0, s^2) data, -x / (s^2 + sigma^2)."""
    torch.manual_seed(0)
    net, s = EDMDenoiser(MLPBackbone(1, 32, 2), sigma_data=1.5), 1.5
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(400):
        x0 = s * torch.randn(256, 1)
        sigma = torch.exp(torch.empty(256).uniform_(math.log(0.1), math.log(3.0)))
        loss = net.dsm_loss(x0, sigma, torch.randn(256, 1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    x = torch.linspace(-2, 2, 9)[:, None]
    for sig in (0.2, 1.0, 2.5):
        torch.testing.assert_close(net.score(x, sig).detach(), -x / (s**2 + sig**2), atol=0.1, rtol=0.1)


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="total_variation"):
        FDistillConfig(divergence="total_variation")
    for kw, name in [({"critic_steps": 0}, "critic_steps"), ({"sigma_min": 2.0, "sigma_max": 1.0}, "sigma_min"),
                     ({"ratio_clamp": (2.0, 3.0)}, "ratio_clamp"), ({"feature_source": "x"}, "feature_source"),
                     ({"sigma_sampling": "x"}, "sigma_sampling"), ({"ema_decay": 1.0}, "ema_decay"),
                     ({"gan_weight": -1.0}, "gan_weight")]:
        with pytest.raises(ValueError, match=name):
            FDistillConfig(**kw)
    teacher = GaussianMixtureTeacher(torch.zeros(1, 2), 1.0)
    with pytest.raises(TypeError, match="config"):
        FDistillTrainer(MLPGenerator(2), teacher, EDMDenoiser(MLPBackbone(2)), config={}, sample_shape=(2,))
    with pytest.raises(ValueError, match="real"):
        FDistillTrainer(MLPGenerator(2), object.__new__(_ScoreOnly), EDMDenoiser(MLPBackbone(2)), config=FDistillConfig(),
                 sample_shape=(2,))


class _ScoreOnly:
    def score(self, x, sigma):
        return -x


def test_evaluations_score_the_same_latents_and_log_eval_metrics():
    """With a generator that cannot move (lr ~ 0), every evaluation sees identical samples: the latents,
    real samples and projections are drawn alike each time, so the logged curve moves only with G."""
    seen = []

    def metrics(x):
        seen.append(x.clone())
        return {"mean_x": float(x[:, 0].mean())}

    torch.manual_seed(0)
    teacher = GaussianMixtureTeacher(torch.tensor([[-2.0, 0.0], [2.0, 0.0]]), 0.3)
    config = FDistillConfig(batch_size=16, critic_steps=1, lr_generator=1e-30, sigma_max=2.0, eval_samples=50,
                            ema_decay=0.0, engine=EngineConfig(max_steps=3, eval_every=1, log_every=1, progress=False,
                                                                   tensorboard=False))
    fd = FDistillTrainer(MLPGenerator(2, 8, 2), teacher, EDMDenoiser(MLPBackbone(2, 8, 1), sigma_data=2.0), config=config,
                  sample_shape=(2,), eval_metrics=metrics)
    history = fd.fit().history
    assert len(seen) == 3 and all(x.shape == (50, 2) for x in seen)
    assert torch.equal(seen[0], seen[1]) and torch.equal(seen[1], seen[2])
    assert [r["eval/mean_x"] for r in history] == pytest.approx([float(seen[0][:, 0].mean())] * 3)
    assert len({r["eval/sliced_wasserstein"] for r in history}) == 1
    with pytest.raises(TypeError, match="eval_metrics"):
        FDistillTrainer(MLPGenerator(2, 8, 2), teacher, EDMDenoiser(MLPBackbone(2, 8, 1)), config=config, sample_shape=(2,),
                 eval_metrics="quality")
