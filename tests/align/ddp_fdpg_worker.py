"""Worker for test_fdpg_ddp.py, launched under ``torchrun --nproc_per_node 2`` (CPU, gloo).

Usage: ddp_fdpg_worker.py OUT_DIR MODE, MODE in {online, offline, fdpo}. Trains
FDPGTrainer (or FDPOTrainer) for a few steps with the default EngineConfig
(cpu=False: the engine must still form the CPU process group).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for ddp_main

from ddp_main import run_worker  # noqa: E402

import torch.distributed as dist  # noqa: E402

from tests.align.test_fdpg_trainer import _trainer  # noqa: E402
from tests.align.test_fdpo_trainer import _config as fdpo_config, _trainer as fdpo_trainer  # noqa: E402


def main() -> None:
    out, mode = Path(sys.argv[1]), sys.argv[2]
    if mode == "fdpo":
        trainer = fdpo_trainer(fdpo_config(4, divergence="js", engine=dict(out_dir=str(out))))
    else:
        trainer = _trainer(out, 4, mode=mode, divergence="forward_kl" if mode == "offline" else "js")
    result = trainer.fit()
    world = dist.get_world_size() if dist.is_initialized() else 1
    rank = dist.get_rank() if dist.is_initialized() else 0
    total = float(sum(p.double().sum() for p in trainer.model.parameters()))
    print(f"rank={rank} processes={world} step={result.step} checksum={total:.10f} "
          f"updates={getattr(trainer, 'proposal_updates', 0)}", flush=True)


if __name__ == "__main__":
    run_worker(main)
