"""Worker of test_engine_call.py under ``torchrun --nproc_per_node 2``: ``ctx.call`` trains in sync,
training through ``ctx.unwrap`` is refused. Usage: ddp_call_worker.py OUT_DIR BATCH_PER_PROCESS STEPS"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for ddp_main

from ddp_main import run_worker  # noqa: E402

import torch  # noqa: E402
from call_toys import CallTask  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from divmin.engine import EngineConfig, Trainer  # noqa: E402


def main() -> None:
    out, batch, steps = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    config = EngineConfig(max_steps=steps, log_every=1, progress=False, tensorboard=False, cpu=True)
    trainer = Trainer(CallTask(batch), config)
    trainer.fit()
    rank, world = trainer.accelerator.process_index, trainer.accelerator.num_processes
    state = {k: v.contiguous() for k, v in trainer.models["bag"].state_dict().items()}
    save_file(state, str(out / f"bag_rank{rank}.safetensors"))
    try:
        Trainer(CallTask(batch, bypass=True), config).fit()
        print(f"rank={rank} processes={world} bypass=accepted", flush=True)
    except RuntimeError as err:
        print(f"rank={rank} processes={world} bypass=refused {'differ across processes' in str(err)}", flush=True)
    torch.distributed.barrier()


if __name__ == "__main__":
    run_worker(main)
