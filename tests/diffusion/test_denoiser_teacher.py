"""EDM's Heun sampler on an exact denoiser reproduces the mixture; a trained denoiser becomes a teacher."""

from __future__ import annotations

import torch

from divmin.diffusion import (
    DenoiserTeacher,
    DenoiserTrainingConfig,
    EDMDenoiser,
    GaussianMixtureTeacher,
    MLPBackbone,
    edm_sampler,
    edm_sigmas,
    train_denoiser,
)
from divmin.engine import EngineConfig
from divmin.eval import mode_stats


def test_edm_sigmas_endpoints_and_monotone():
    s = edm_sigmas(10, 0.002, 80.0)
    assert s.shape == (11,) and float(s[0]) == 80.0 and abs(float(s[9]) - 0.002) < 1e-12 and float(s[10]) == 0.0
    assert bool((s[1:] < s[:-1]).all())


def test_heun_sampler_on_the_exact_denoiser_reproduces_the_mixture():
    means = torch.tensor([[-3.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    w = torch.tensor([0.6, 0.3, 0.1])
    teacher = GaussianMixtureTeacher(means, 0.3, w).double()
    gen = torch.Generator().manual_seed(0)
    x = edm_sampler(teacher.denoise, torch.randn(4000, 2, generator=gen, dtype=torch.float64), steps=40,
                    sigma_min=0.002, sigma_max=40.0)
    st = mode_stats(x, means, w, 0.3)
    assert st.covered == 3 and st.tv < 0.03 and st.quality > 0.97
    near = x[(x - means[0]).norm(dim=1) < 1.5]  # the heaviest mode keeps its within-mode spread 0.3
    torch.testing.assert_close(near.std(0), torch.full((2,), 0.3, dtype=torch.float64), atol=0.02, rtol=0)


def test_trained_denoiser_teacher_scores_a_gaussian():
    torch.manual_seed(0)
    data = 0.7 * torch.randn(2000, 1) + 1.0
    cfg = DenoiserTrainingConfig(batch_size=256, lr=3e-3, sigma_max=5.0, sigma_sampling="log_uniform",
                                 engine=EngineConfig(max_steps=300, log_every=300, progress=False, tensorboard=False))
    teacher = train_denoiser(EDMDenoiser(MLPBackbone(1, 32, 2), sigma_data=1.0), data, cfg)
    assert isinstance(teacher, DenoiserTeacher) and not any(p.requires_grad for p in teacher.parameters())
    x = torch.linspace(-0.4, 2.4, 8)[:, None]  # within 2 std of the data
    for sig in (0.3, 1.0):
        exact = -(x - 1.0) / (0.49 + sig**2)
        torch.testing.assert_close(teacher.score(x, sig), exact, atol=0.15, rtol=0.1)
    s = teacher.sample(500, generator=torch.Generator().manual_seed(1), steps=10)
    assert abs(float(s.mean()) - 1.0) < 0.15 and abs(float(s.std()) - 0.7) < 0.15


def test_denoiser_generator_starts_as_the_teachers_first_step_and_trains_its_own_copy():
    from divmin.diffusion import DenoiserGenerator

    den = EDMDenoiser(MLPBackbone(3, 16, 1), sigma_data=1.0).requires_grad_(False)
    gen = DenoiserGenerator(den, 80.0)
    z = torch.randn(5, 3)
    torch.testing.assert_close(gen(z), den(80.0 * z, 80.0))
    assert all(p.requires_grad for p in gen.parameters()) and not any(p.requires_grad for p in den.parameters())
