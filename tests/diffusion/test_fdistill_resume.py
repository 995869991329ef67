"""`FDistillTrainer` resumes exactly: the log-ratio estimator's per-bin means travel in the task state."""

from __future__ import annotations

import torch

from divmin.diffusion import EDMDenoiser, FDistillTrainer, FDistillConfig, GaussianMixtureTeacher, MLPBackbone, MLPGenerator
from divmin.engine import EngineConfig


def _fdistill(steps: int, out_dir) -> FDistillTrainer:
    torch.manual_seed(0)
    teacher = GaussianMixtureTeacher(torch.tensor([[-2.0, 0.0], [2.0, 0.0]]), 0.3, torch.tensor([2.0, 1.0]))
    engine = EngineConfig(max_steps=steps, log_every=steps, progress=False, tensorboard=False, checkpoint_every=2,
                          out_dir=str(out_dir))
    config = FDistillConfig(batch_size=64, critic_steps=1, sigma_max=2.0, ratio_ema=0.5, divergence="js",
                            engine=engine)
    return FDistillTrainer(MLPGenerator(2, 16, 2), teacher, EDMDenoiser(MLPBackbone(2, 16, 2)), config=config, sample_shape=(2,))


def test_resume_continues_the_ratio_ema_and_the_generator_exactly(tmp_path):
    straight = _fdistill(4, tmp_path / "straight")
    straight.fit()
    _fdistill(2, tmp_path / "split").fit()
    resumed = _fdistill(4, tmp_path / "split")
    resumed.fit(resume=True)
    assert not torch.equal(straight.ratio_mean, torch.ones(10))
    assert torch.equal(resumed.ratio_mean, straight.ratio_mean)
    for a, b in zip(resumed.generator.parameters(), straight.generator.parameters()):
        assert torch.equal(a, b)
