"""Worker of test_methods_ddp.py under ``torchrun --nproc_per_node 2`` (CPU, gloo): trains one of the
newer method trainers a few steps and prints a checksum of its weights per rank.

Usage: methods_ddp_worker.py OUT_DIR METHOD, METHOD in {robust, mdlm, speech, depict, didi, judge}.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from ddp_main import run_worker  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402

from divmin.cluster import DepictConfig, DepictTrainer  # noqa: E402
from divmin.data import MarkovLanguage  # noqa: E402
from divmin.diffusion import (DiDiConfig, DiDiTrainer, MaskedDiffusionLM, MDLMConfig, MDLMTrainer,  # noqa: E402
                              MDLMTransformer)
from divmin.lm import JudgeConfig, JudgeTrainer, tiny_judge  # noqa: E402
from divmin.engine import EngineConfig  # noqa: E402
from divmin.robust import AttackSettings, RobustTrainer, WEATConfig  # noqa: E402
from divmin.speech import SpeechToEGGTrainer, SpeechToEGGConfig, synthesize  # noqa: E402


def _robust(engine: EngineConfig) -> RobustTrainer:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(128) % 3
    x = (torch.rand(3, 4, generator=g)[y] + 0.05 * torch.randn(128, 4, generator=g)).clamp(0, 1)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    return RobustTrainer(net, TensorDataset(x, y), config=WEATConfig(objective="weat", attack=AttackSettings(eps=0.1, steps=2),
                                                                      lr=1e-2, batch_size=16, engine=engine))


def _mdlm(engine: EngineConfig) -> MDLMTrainer:
    torch.manual_seed(0)
    lang = MarkovLanguage(5, 4, order=1, seed=0)
    lm = MaskedDiffusionLM(MDLMTransformer(5, 4, width=16, depth=1, heads=2), 5, 4)
    return MDLMTrainer(lm, lang.sample, config=MDLMConfig(batch_size=8, engine=engine))


def _speech(engine: EngineConfig) -> SpeechToEGGTrainer:
    u = synthesize(0.1, sample_rate=8000.0, seed=0)
    cfg = SpeechToEGGConfig(frame_len=32, hop=8, latent_dim=4, hidden=8, layers=2, decoder_layers=2, batch_size=8,
                            ae_steps=2, critic_codes=32, adv_weight=0.5, engine=engine)
    return SpeechToEGGTrainer(u.speech, u.egg, config=cfg)


def _depict(engine: EngineConfig) -> DepictTrainer:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 8, 8, generator=g)[torch.arange(64) % 2] + 0.05 * torch.rand(64, 1, 8, 8, generator=g)
    # pretraining at step 0, k-means head and first target at step 1, a target update at step 3
    return DepictTrainer(x, config=DepictConfig(n_clusters=2, channels=(4,), embed_dim=3, pretrain_steps=1,
                                                update_interval=2, tol=0.0, kmeans_n_init=2, batch_size=16,
                                                engine=engine))


def _didi(engine: EngineConfig) -> DiDiTrainer:
    torch.manual_seed(0)
    teacher = MaskedDiffusionLM(MDLMTransformer(5, 4, width=16, depth=1, heads=2), 5, 4)
    cfg = DiDiConfig(batch_size=8, group_size=4, teacher_pool=16, teacher_nfe=2, eval_samples=8,
                     lr_student=1e-3, lr_discriminator=1e-3, engine=engine)
    return DiDiTrainer(teacher=teacher, config=cfg)


def _judge(engine: EngineConfig) -> JudgeTrainer:
    blocks = MarkovLanguage(5, 4, order=1, seed=0).sample(64, torch.Generator().manual_seed(0))
    return JudgeTrainer(tiny_judge(5, 4, seed=0), blocks, config=JudgeConfig(batch_size=8, engine=engine))


BUILDERS = {"robust": _robust, "mdlm": _mdlm, "speech": _speech, "depict": _depict, "didi": _didi,
            "judge": _judge}


def main() -> None:
    out, method = Path(sys.argv[1]), sys.argv[2]
    engine = EngineConfig(max_steps=4, log_every=1, progress=False, tensorboard=False, out_dir=str(out), seed=0)
    trainer = BUILDERS[method](engine)
    result = trainer.fit()
    world = dist.get_world_size() if dist.is_initialized() else 1
    rank = dist.get_rank() if dist.is_initialized() else 0
    # every model the engine trained or carried (students, critics, EMA copies): one checksum over all
    models = nn.ModuleList(trainer.engine.models[name] for name in sorted(trainer.engine.models))
    total = float(sum(p.detach().double().sum() for p in models.parameters()))
    print(f"rank={rank} processes={world} step={result.step} checksum={total:.10f}", flush=True)


if __name__ == "__main__":
    run_worker(main)
