"""Benchmark: divmin's f-DPO trainer (`FDPOTrainer`) against TRL's `DPOTrainer`, steps per second.

Both train a fresh ``divmin.lm.tiny_gpt2`` policy (2 layers, width 64, vocab 1000) with a
frozen second instance of it (same weights) as the reference, on the same preference pairs (random word prompts of
4 to 24 tokens, chosen and rejected responses such that prompt + response + EOS is at
most 63 tokens), batch 8 pairs, fp32, torch AdamW at lr 1e-4 with a constant schedule,
gradient clipping at 1.0, beta 0.1, the sigmoid loss with no label smoothing; TRL's
gradient checkpointing, bf16 and reference precomputation off. ``--divergence
reverse_kl`` is DPO (TRL's ``f_divergence_type="reverse_kl"``), ``js`` the Jensen-Shannon
constraint (TRL's ``"js_divergence"``). The rows are text over a word-level tokenizer;
each trainer tokenizes them itself (both append EOS to the responses), and the script
checks that both train on identical token ids before it reports anything.

Each trainer runs its own full training loop in its own long-lived process; the two
processes pass a baton after every optimizer step, so their steps interleave one for one
and load on a shared machine hits both alike. A step's time is the wall time from taking
the baton to the end of the step (data loading, policy and reference forwards, loss,
backward, clipping, update, logging). The first ``--warmup`` steps are dropped. Printed:
median step time, steps/s, CPU time per step and peak RSS of each process, and last the
median steps/s ratio (with the quartiles of the per-pair ratios).

    OMP_NUM_THREADS=1 python benchmarks/fdpo_trainer.py --quick              # 20 steps each
    OMP_NUM_THREADS=1 python benchmarks/fdpo_trainer.py --divergence js --steps 200
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import tempfile
from typing import Any

from _common import (BATCH, MAX_LEN, VOCAB, Baton, load, print_table, run_interleaved, spread, timed_engine, tiny,
                     tokenizer)

BETA = 0.1
TRL_NAMES = {"reverse_kl": "reverse_kl", "js": "js_divergence"}  # divmin name -> TRL's f_divergence_type


def _rows(n: int, seed: int) -> list[dict[str, str]]:
    """Preference rows as text; a response is " w.. w.." so that prompt + response splits on the space."""
    rng = random.Random(seed)

    def words(k: int) -> str:
        return " ".join(f"w{rng.randrange(3, VOCAB)}" for _ in range(k))

    rows = []
    for _ in range(n):
        plen = rng.randint(4, 24)
        room = MAX_LEN - plen - 1  # one token for EOS
        rows.append({"prompt": words(plen), "chosen": " " + words(rng.randint(4, room)),
                     "rejected": " " + words(rng.randint(4, room))})
    return rows


def _ids_digest(examples: Any) -> str:
    """A digest of every example's (prompt, chosen, rejected) token ids, in row order."""
    triples = [(list(e["prompt_ids"]), list(e["chosen_ids"]), list(e["rejected_ids"])) for e in examples]
    return hashlib.sha256(json.dumps(triples).encode()).hexdigest()


def run_divmin(args: argparse.Namespace, baton: Baton) -> str:
    from divmin.align import FDPOConfig, FDPOTrainer

    engine = timed_engine(baton)
    cfg = FDPOConfig(divergence=args.divergence, beta=BETA, lr=1e-4, batch_size=BATCH, max_length=MAX_LEN + 1,
                     max_prompt_length=32, reference="copy", engine=engine)
    trainer = FDPOTrainer(tiny(1), tokenizer(), _rows(args.rows, 0), ref_model=tiny(1), config=cfg)
    digest = _ids_digest(trainer.train_examples)
    baton.take()
    trainer.fit()
    return digest


def run_trl(args: argparse.Namespace, baton: Baton) -> str:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    class Timer(TrainerCallback):
        def on_train_begin(self, *a: Any, **k: Any) -> None:
            baton.take()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            baton.step_done()

    out = tempfile.mkdtemp(prefix="fdpo_trainer_trl_")
    cfg = DPOConfig(output_dir=out, per_device_train_batch_size=BATCH, learning_rate=1e-4, max_grad_norm=1.0,
                    lr_scheduler_type="constant", optim="adamw_torch", weight_decay=0.0, beta=BETA,
                    loss_type=["sigmoid"], label_smoothing=0.0, f_divergence_type=TRL_NAMES[args.divergence],
                    precompute_ref_log_probs=False, max_steps=baton.total, logging_steps=10, save_strategy="no",
                    report_to=[], use_cpu=True, gradient_checkpointing=False, bf16=False, fp16=False,
                    dataloader_num_workers=0, disable_tqdm=True, seed=0, max_length=None)
    trainer = DPOTrainer(model=tiny(1), ref_model=tiny(1), args=cfg, train_dataset=Dataset.from_list(_rows(args.rows, 0)),
                         processing_class=tokenizer(), callbacks=[Timer()])
    digest = _ids_digest(trainer.train_dataset)
    trainer.train()  # TRL's verb (divmin's trainers use fit)
    return digest


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--divergence", choices=sorted(TRL_NAMES), default="reverse_kl")
    p.add_argument("--steps", type=int, default=None, help="timed steps per trainer (default 100; 20 with --quick)")
    p.add_argument("--warmup", type=int, default=5, help="untimed first steps")
    p.add_argument("--rows", type=int, default=256, help="preference pairs in the dataset")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    args.steps = args.steps or (20 if args.quick else 100)
    import torch
    import trl

    print(f"FDPOTrainer vs TRL {trl.__version__} DPOTrainer, {args.divergence}, sigmoid, beta {BETA}, frozen "
          f"reference, tiny_gpt2 (2 x 64, vocab {VOCAB}), batch {BATCH} pairs, <= {MAX_LEN} tokens, fp32 CPU, "
          f"torch {torch.__version__}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"load {load()}", flush=True)
    got = run_interleaved({"divmin": run_divmin, "trl": run_trl}, args, args.warmup, args.steps)
    if got["divmin"][3] != got["trl"][3]:
        raise SystemExit("the two trainers tokenized the rows differently: no like-for-like comparison")
    print("token ids: identical in both trainers")
    print_table({name: got[name][:3] for name in ("divmin", "trl")})
    ratio = statistics.median(got["trl"][0]) / statistics.median(got["divmin"][0])
    mid, lo, hi = spread(got["divmin"][0], got["trl"][0])
    print(f"load at the end {load()}; per-pair ratio median {mid:.2f} (quartiles {lo:.2f}-{hi:.2f})")
    print(f"median steps/s ratio FDPOTrainer / DPOTrainer ({args.divergence}): {ratio:.2f}x")


if __name__ == "__main__":
    main()
