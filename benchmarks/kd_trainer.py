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
    OMP_NUM_THREADS=1 python benchmarks/kd_trainer.py --divergence forward_kl --fused off   # logits path
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from typing import Any

from _common import (BATCH, MAX_LEN, VOCAB, Baton, load, print_table, prompt_completion_rows, right_padded,
                     run_interleaved, timed_engine, tiny, tokenizer)


def run_divmin(args: argparse.Namespace, baton: Baton) -> None:
    from divmin.distill import DistillConfig, DistillTrainer

    engine = timed_engine(baton)
    cfg = DistillConfig(divergence=_divmin_divergence(args), lr=1e-4, batch_size=BATCH, engine=engine,
                        fused={"auto": None, "on": True, "off": False}[args.fused])
    trainer = DistillTrainer(tiny(1), tiny(0), prompt_completion_rows(args.rows, 0), config=cfg, pad_id=0)
    baton.take()
    trainer.fit()


def _divmin_divergence(args: argparse.Namespace) -> Any:
    import divmin

    return divmin.divergence("generalized_js", beta=0.5) if args.divergence == "generalized_js" else args.divergence


def _trl_collator(batch: list[dict[str, list[int]]]) -> dict[str, Any]:
    return right_padded(batch, shift=0)  # TRL's GKD shifts labels itself


def run_trl(args: argparse.Namespace, baton: Baton) -> None:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    class Timer(TrainerCallback):
        def on_train_begin(self, *a: Any, **k: Any) -> None:
            baton.take()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            baton.step_done()

    tok = tokenizer()
    out = tempfile.mkdtemp(prefix="kd_trainer_trl_")
    beta = 0.5 if args.divergence == "generalized_js" else 0.0  # TRL's beta 0 is forward KL
    cfg = GKDConfig(output_dir=out, per_device_train_batch_size=BATCH, learning_rate=1e-4, max_grad_norm=1.0,
                    lr_scheduler_type="constant", optim="adamw_torch", weight_decay=0.0, lmbda=0.0, beta=beta,
                    max_steps=baton.total, logging_steps=10, save_strategy="no", report_to=[], use_cpu=True,
                    gradient_checkpointing=False, bf16=False, fp16=False, dataloader_num_workers=0,
                    remove_unused_columns=False, disable_tqdm=True, seed=0, max_length=None)
    trainer = GKDTrainer(model=tiny(1), teacher_model=tiny(0), args=cfg, train_dataset=Dataset.from_list(prompt_completion_rows(args.rows, 0)),
                         data_collator=_trl_collator, processing_class=tok, callbacks=[Timer()])
    trainer.train()  # TRL's verb (divmin's trainers use fit)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--divergence", choices=["generalized_js", "forward_kl"], default="generalized_js")
    p.add_argument("--steps", type=int, default=None, help="timed steps per trainer (default 100; 20 with --quick)")
    p.add_argument("--warmup", type=int, default=5, help="untimed first steps")
    p.add_argument("--rows", type=int, default=256, help="dataset rows")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--fused", choices=["auto", "on", "off"], default="auto",
                   help="DistillConfig(fused=None / True / False); auto (the default) and on both take the soft "
                   "loss by fused_linear_kd_loss on the hidden states for these models, off forms the logits")
    args = p.parse_args()
    args.steps = args.steps or (20 if args.quick else 100)
    import torch
    import trl

    print(f"DistillTrainer{' (fused=' + args.fused + ')'} vs TRL {trl.__version__} GKDTrainer, {args.divergence}, off-policy, tiny_gpt2 "
          f"(2 x 64, vocab {VOCAB}), batch {BATCH}, <= {MAX_LEN} tokens, fp32 CPU, torch {torch.__version__}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, load {os.getloadavg()[0]:.2f}", flush=True)
    got = run_interleaved({"divmin": run_divmin, "trl": run_trl}, args, args.warmup, args.steps)
    print_table({name: got[name][:3] for name in ("divmin", "trl")})
    ratio = statistics.median(got["trl"][0]) / statistics.median(got["divmin"][0])
    print(f"load at the end {load()}")
    print(f"median steps/s ratio DistillTrainer / GKDTrainer ({args.divergence}): {ratio:.2f}x")


if __name__ == "__main__":
    main()
