"""Benchmark: `DistillTrainer` against TRL's `GKDTrainer`, off-policy, steps per second.

Both train a fresh ``divmin.lm.tiny_gpt2`` student (2 layers, width 64, vocab 1000) toward
another as the teacher, on the same rows (random prompt/completion token ids, prompt +
completion up to 63 tokens), batch 8, fp32, torch AdamW at lr 1e-4 with a constant
schedule, gradient clipping at 1.0, lmbda 0 (the dataset's completions; no sampling);
TRL's gradient checkpointing and bf16 off. The loss is the generalized JS (beta 0.5,
TRL's default) or forward KL (TRL's beta 0). TRL gets the same token ids through a
collator that builds its ``input_ids`` / ``attention_mask`` / ``labels`` (labels -100 on
prompt and padding), so both see identical batches up to order.

Each trainer runs its own full training loop in its own long-lived process; the two
processes pass a baton after every optimizer step, so their steps interleave one for one
and load on a shared machine hits both alike. A step's time is the wall time from taking
the baton to the end of the step (data loading, forward, backward, clipping, update,
logging). The first ``--warmup`` steps are dropped. Printed: median step time, steps/s,
CPU time per step and peak RSS of each process, and last the median steps/s ratio.

    OMP_NUM_THREADS=1 python benchmarks/kd_trainer.py --quick               # 20 steps each
    OMP_NUM_THREADS=1 python benchmarks/kd_trainer.py --divergence forward_kl --steps 200
    OMP_NUM_THREADS=1 python benchmarks/kd_trainer.py --divergence forward_kl --fused
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import resource
import statistics
import tempfile
import time
from typing import Any

VOCAB = 1000
BATCH = 8
MAX_LEN = 63


def _rows(n: int, seed: int) -> list[dict[str, list[int]]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        plen = rng.randint(4, 24)
        clen = rng.randint(8, MAX_LEN - plen)
        rows.append({"prompt_ids": [rng.randrange(2, VOCAB) for _ in range(plen)],
                     "completion_ids": [rng.randrange(2, VOCAB) for _ in range(clen)]})
    return rows


class _Baton:
    """Step-by-step alternation between two processes, and the time each step held the baton."""

    def __init__(self, mine: Any, theirs: Any, total: int) -> None:
        self.mine, self.theirs, self.total = mine, theirs, total
        self.times: list[float] = []
        self.cpu: list[float] = []
        self.start = self.cpu_start = 0.0

    def take(self) -> None:
        self.mine.wait()
        self.start, self.cpu_start = time.perf_counter(), time.process_time()

    def step_done(self) -> None:
        self.times.append(time.perf_counter() - self.start)
        self.cpu.append(time.process_time() - self.cpu_start)
        self.mine.clear()
        self.theirs.set()
        if len(self.times) < self.total:
            self.take()


def _tiny(seed: int) -> Any:
    from divmin.lm import tiny_gpt2

    return tiny_gpt2(VOCAB, seed=seed, n_layer=2, n_embd=64, n_positions=64)


def run_divmin(args: argparse.Namespace, baton: _Baton) -> None:
    import divmin.engine._trainer as engine_trainer
    from divmin.distill import DistillConfig, DistillTrainer
    from divmin.engine import EngineConfig

    inner = engine_trainer.Trainer._train_step

    def timed_step(self: Any, run: Any, step: int) -> None:
        inner(self, run, step)
        baton.step_done()

    engine_trainer.Trainer._train_step = timed_step  # the benchmark's own hook: time each engine step
    engine = EngineConfig(max_steps=baton.total, log_every=10, progress=False, tensorboard=False,
                          max_grad_norm=1.0, lr_schedule="constant")
    cfg = DistillConfig(divergence=_divmin_divergence(args), lr=1e-4, batch_size=BATCH, engine=engine,
                        fused=args.fused)
    trainer = DistillTrainer(_tiny(1), _tiny(0), _rows(args.rows, 0), config=cfg, pad_id=0)
    baton.take()
    trainer.train()


def _divmin_divergence(args: argparse.Namespace) -> Any:
    import divmin

    return divmin.divergence("generalized_js", beta=0.5) if args.divergence == "generalized_js" else args.divergence


def _trl_collator(batch: list[dict[str, list[int]]]) -> dict[str, Any]:
    import torch

    width = max(len(r["prompt_ids"]) + len(r["completion_ids"]) for r in batch)
    ids = torch.zeros(len(batch), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, r in enumerate(batch):
        seq = r["prompt_ids"] + r["completion_ids"]
        ids[i, :len(seq)] = torch.tensor(seq)
        mask[i, :len(seq)] = 1
        labels[i, len(r["prompt_ids"]):len(seq)] = torch.tensor(r["completion_ids"])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def run_trl(args: argparse.Namespace, baton: _Baton) -> None:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    from divmin.lm import word_tokenizer

    class Timer(TrainerCallback):
        def on_train_begin(self, *a: Any, **k: Any) -> None:
            baton.take()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            baton.step_done()

    tok = word_tokenizer(["[PAD]", "[EOS]", "[UNK]"] + [f"w{i}" for i in range(3, VOCAB)])
    out = tempfile.mkdtemp(prefix="kd_trainer_trl_")
    beta = 0.5 if args.divergence == "generalized_js" else 0.0  # TRL's beta 0 is forward KL
    cfg = GKDConfig(output_dir=out, per_device_train_batch_size=BATCH, learning_rate=1e-4, max_grad_norm=1.0,
                    lr_scheduler_type="constant", optim="adamw_torch", weight_decay=0.0, lmbda=0.0, beta=beta,
                    max_steps=baton.total, logging_steps=10, save_strategy="no", report_to=[], use_cpu=True,
                    gradient_checkpointing=False, bf16=False, fp16=False, dataloader_num_workers=0,
                    remove_unused_columns=False, disable_tqdm=True, seed=0, max_length=None)
    trainer = GKDTrainer(model=_tiny(1), teacher_model=_tiny(0), args=cfg, train_dataset=Dataset.from_list(_rows(args.rows, 0)),
                         data_collator=_trl_collator, processing_class=tok, callbacks=[Timer()])
    trainer.train()


def _worker(name: str, args: argparse.Namespace, mine: Any, theirs: Any, results: Any) -> None:
    import torch

    torch.set_num_threads(1)
    baton = _Baton(mine, theirs, args.warmup + args.steps)
    try:
        (run_divmin if name == "divmin" else run_trl)(args, baton)
    finally:
        theirs.set()  # never leave the other process waiting
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    results.put((name, baton.times[args.warmup:], baton.cpu[args.warmup:], peak))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--divergence", choices=["generalized_js", "forward_kl"], default="generalized_js")
    p.add_argument("--steps", type=int, default=None, help="timed steps per trainer (default 100; 20 with --quick)")
    p.add_argument("--warmup", type=int, default=5, help="untimed first steps")
    p.add_argument("--rows", type=int, default=256, help="dataset rows")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--fused", action="store_true", help="DistillConfig(fused=True): the soft loss by "
                   "fused_linear_kd_loss on the student's and teacher's hidden states")
    args = p.parse_args()
    args.steps = args.steps or (20 if args.quick else 100)
    import torch
    import trl

    print(f"DistillTrainer{' (fused)' if args.fused else ''} vs TRL {trl.__version__} GKDTrainer, {args.divergence}, off-policy, tiny_gpt2 "
          f"(2 x 64, vocab {VOCAB}), batch {BATCH}, <= {MAX_LEN} tokens, fp32 CPU, torch {torch.__version__}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, load {os.getloadavg()[0]:.2f}", flush=True)
    ctx = mp.get_context("spawn")
    turns = {"divmin": ctx.Event(), "trl": ctx.Event()}
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(name, args, turns[name], turns[other], results))
             for name, other in (("divmin", "trl"), ("trl", "divmin"))]
    for proc in procs:
        proc.start()
    turns["divmin"].set()  # divmin takes the first step once it is set up; then they alternate
    got = {}
    for _ in procs:
        name, times, cpu, peak = results.get()
        got[name] = (times, cpu, peak)
    for proc in procs:
        proc.join()
    print(f"{'trainer':<10}{'median step (ms)':>18}{'steps/s':>10}{'CPU ms/step':>13}{'peak RSS (MB)':>15}")
    for name in ("divmin", "trl"):
        times, cpu, peak = got[name]
        med = statistics.median(times)
        print(f"{name:<10}{1e3 * med:>18.1f}{1 / med:>10.2f}{1e3 * statistics.median(cpu):>13.1f}{peak / 1e6:>15.0f}")
    ratio = statistics.median(got["trl"][0]) / statistics.median(got["divmin"][0])
    print(f"load at the end {os.getloadavg()[0]:.2f}")
    print(f"median steps/s ratio DistillTrainer / GKDTrainer ({args.divergence}): {ratio:.2f}x")


if __name__ == "__main__":
    main()
