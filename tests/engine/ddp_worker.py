"""Worker launched by test_engine_ddp.py under ``torchrun --nproc_per_node 2``.

Usage: ddp_worker.py OUT_DIR MAX_STEPS BATCH_PER_PROCESS ACCUM [--stop-at K] [--resume]
Trains the deterministic regression toy with the engine, unchanged code.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for ddp_main

from ddp_main import run_worker  # noqa: E402

from engine_toys import RegressionTask  # noqa: E402

from divmin.engine import EngineConfig, Trainer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("max_steps", type=int)
    parser.add_argument("batch_size", type=int)
    parser.add_argument("accum", type=int)
    parser.add_argument("--stop-at", type=int, default=None)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    task = RegressionTask(batch_size=args.batch_size, stochastic=False, optimizer="adam", stop_at=args.stop_at)
    config = EngineConfig(
        max_steps=args.max_steps,
        grad_accum_steps=args.accum,
        log_every=1,
        checkpoint_every=3,
        out_dir=args.out_dir,
        progress=False,
        tensorboard=False,
        lr_schedule="linear",
        warmup_steps=2,
        max_grad_norm=0.5,
        cpu=True,
    )
    result = Trainer(task, config).fit(resume=args.resume)
    print(f"rank done step={result.step} processes={_world_size()}", flush=True)


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


if __name__ == "__main__":
    run_worker(main)
