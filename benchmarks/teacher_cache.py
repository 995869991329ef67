"""Benchmark: a teacher cache on disk against the teacher in memory.

Three parts, all in one run (figures and ratios printed, nothing asserted):

1. Storage: bytes per token of :func:`divmin.distill.cache_teacher` shards for k in
   {8, 32, 128} at V = 32000 and 128256 (``int8`` and ``float16`` log-probs, ids packed to
   the vocabulary's byte width), measured on disk, against full fp16 logits (2 V bytes),
   and how far each encoding moves the bucketed loss (forward KL, reverse KL, JS) from
   its float32 value, and the float32 bucketed value from the full-logit one.
   The logits are Zipf-shaped (rank r gets about -1.1 log r, plus noise): no pretrained
   weights are downloaded here; pass ``--logits FILE.pt`` ((N, V) tensor) to use real ones.
2. Cache writing: tokens per second of ``cache_teacher`` with a random GPT-2 teacher.
3. Training step: a student step (forward, loss, backward, AdamW) with the live teacher
   (teacher forward + dense ``token_kd_loss``) and with the cache (``TeacherCache`` rows +
   sparse loss), each in a fresh subprocess: median step time and peak memory of the whole
   process (CUDA: max allocated; CPU: the resident-set high-water mark VmHWM), teacher
   weights included when they are held.

    python benchmarks/teacher_cache.py                       # CPU: teacher 4 x 256, V = 32000
    python benchmarks/teacher_cache.py --device cuda --vocab 128256 --teacher-layers 16 --teacher-embd 2048 \\
        --rows 256 --seq 512 --batch 8
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from divmin.distill import TeacherCache, TopKTeacher, cache_teacher, token_kd_loss
from divmin.distill._cache_io import decode, encode, write_shard
from divmin.lm import IGNORE, LMCollator, tiny_gpt2

DIVS = ("forward_kl", "reverse_kl", "js")


def _lm_like(n: int, vocab: int, seed: int, exponent: float) -> torch.Tensor:
    """Zipf-shaped logits: the id of rank r gets -exponent * log r, plus N(0, 0.5^2) noise; ids in random order."""
    g = torch.Generator().manual_seed(seed)
    ranks = torch.argsort(torch.rand(n, vocab, generator=g), -1).float() + 1
    return -exponent * ranks.log() + 0.5 * torch.randn(n, vocab, generator=g)


def storage(args: argparse.Namespace) -> None:
    print("1. storage: bytes per token on disk (shard of", args.storage_tokens, "tokens), loss error of the encodings")
    print(f"{'V':>7} {'k':>4} {'top-k':>6} {'dtype':>8} {'B/token':>8} {'fp16 logits':>11} {'ratio':>7}  "
          + "  ".join(f"{d}: trunc / quant" for d in DIVS))
    for vocab in (32000, 128256):
        t = torch.load(args.logits).float() if args.logits else _lm_like(args.storage_tokens, vocab, 0, args.zipf)
        if t.shape[1] != vocab:
            continue
        # a student near the teacher: its logits plus N(0, 1) noise
        s = t + torch.randn(t.shape, generator=torch.Generator().manual_seed(1))
        lp = torch.log_softmax(t, -1)
        full = {d: float(token_kd_loss(s, t, divergence=d)) for d in DIVS}
        for k in (8, 32, 128):
            val, idx = lp.topk(k, -1)
            tail = torch.log1p(-val.exp().sum(-1).clamp(max=1 - 1e-7))
            mass = float(val.exp().sum(-1).mean())
            exact = {d: float(token_kd_loss(s, TopKTeacher(val, idx), divergence=d)) for d in DIVS}
            for dtype in ("float16", "int8"):
                back = decode({**encode(val, dtype), "log_tail": tail}, dtype)
                with tempfile.TemporaryDirectory() as tmp:
                    offsets = torch.tensor([0, val.shape[0]])
                    e = write_shard(Path(tmp) / "s.safetensors", offsets, idx, val, tail, vocab_size=vocab,
                                    dtype=dtype)
                per = e["bytes"] / val.shape[0]
                errs = []
                for d in DIVS:
                    q = float(token_kd_loss(s, TopKTeacher(back, idx), divergence=d))
                    errs.append(f"{(exact[d] - full[d]) / full[d]:+.2%} / {(q - exact[d]) / exact[d]:+.3%}")
                print(f"{vocab:>7} {k:>4} {mass:>6.3f} {dtype:>8} {per:>8.1f} {2 * vocab:>11} "
                      f"{2 * vocab / per:>6.0f}x  "
                      + "  ".join(f"{x:>20}" for x in errs))


def members_table(args: argparse.Namespace) -> None:
    """Every f-member: relative error of the sparse-teacher loss against the full-logit one, per k and tail mode."""
    from divmin.divergences import available_divergences

    vocab = 32000
    t = torch.load(args.logits).float() if args.logits else _lm_like(args.storage_tokens, vocab, 0, args.zipf)
    s = t + torch.randn(t.shape, generator=torch.Generator().manual_seed(1))
    lp = torch.log_softmax(t, -1)
    ks = (8, 32, 128)
    tops = {k: lp.topk(k, -1) for k in ks}
    uniform = {}  # the tail mass spread evenly over the V - k other ids (TeacherCache(tail="uniform"))
    for k, (val, idx) in tops.items():
        fill = (torch.log1p(-val.exp().sum(-1).clamp(max=1 - 1e-7)) - math.log(t.shape[1] - k)).unsqueeze(-1)
        uniform[k] = fill.expand(-1, t.shape[1]).clone().scatter_(-1, idx, val)
    print(f"\n1b. (D_sparse - D_full) / D_full per member, V = {t.shape[1]}; tail bucket | renormalize | uniform "
          "(inf: the renormalised teacher has no mass where the student has some)")
    print(f"{'member':>24} " + " ".join(f"{'k=' + str(k):>30}" for k in ks))
    for name in available_divergences("f"):
        full = float(token_kd_loss(s, t, divergence=name))
        cells = []
        for k in ks:
            val, idx = tops[k]
            b = float(token_kd_loss(s, TopKTeacher(val, idx, "bucket"), divergence=name))
            r = float(token_kd_loss(s, TopKTeacher(val, idx, "renormalize"), divergence=name))
            u = float(token_kd_loss(s, uniform[k], divergence=name))
            cells.append(f"{(b - full) / full:+8.2%} |{(r - full) / full:+9.2%} |{(u - full) / full:+8.2%}")
        print(f"{name:>24} " + " ".join(f"{c:>30}" for c in cells))


def _setup(args: argparse.Namespace, teacher: bool = True):
    g = torch.Generator().manual_seed(0)
    rows = [{"prompt_ids": torch.randint(2, args.vocab, (args.prompt,), generator=g).tolist(),
             "completion_ids": torch.randint(2, args.vocab, (args.seq - args.prompt,), generator=g).tolist()}
            for _ in range(args.rows)]
    if not teacher:
        return rows, None
    teacher = tiny_gpt2(args.vocab, seed=0, n_layer=args.teacher_layers, n_embd=args.teacher_embd,
                        n_positions=args.seq + 1, n_head=max(1, args.teacher_embd // 64))
    return rows, teacher.to(args.device).eval()


def writing(args: argparse.Namespace) -> None:
    rows, teacher = _setup(args)
    tokens = sum(len(r["completion_ids"]) for r in rows)
    cache_teacher(teacher, rows[:args.batch], os.path.join(args.cache_dir, "warm"), top_k=args.k,
                  batch_size=args.batch)
    t0 = time.perf_counter()
    m = cache_teacher(teacher, rows, args.cache_dir, top_k=args.k, dtype="int8", batch_size=args.batch,
                      rows_per_shard=max(args.batch, args.rows // 4))
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    print(f"\n2. cache writing: {tokens} tokens in {dt:.2f} s = {tokens / dt:,.0f} tokens/s "
          f"(k={args.k}, int8, V={args.vocab}, teacher {args.teacher_layers} x {args.teacher_embd}, "
          f"batch {args.batch}; {m['bytes_per_token_on_disk']:.1f} bytes/token on disk)")


def _peak(device: str) -> int:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated()
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM"))


def worker(args: argparse.Namespace) -> dict:
    """One mode's training steps in this (fresh) process: median step seconds and process peak memory."""
    rows, teacher = _setup(args, teacher=args.worker == "live")  # the cache run never builds the teacher
    student = tiny_gpt2(args.vocab, seed=1, n_layer=args.student_layers, n_embd=args.student_embd,
                        n_positions=args.seq + 1, n_head=max(1, args.student_embd // 64)).to(args.device)
    cache = None
    if args.worker == "cache":
        cache = TeacherCache(args.cache_dir)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4)
    collate, times = LMCollator(0), []
    for step in range(args.steps + 1):
        pick = list(range((step * args.batch) % args.rows, (step * args.batch) % args.rows + args.batch))
        pick = [i % args.rows for i in pick]
        b = {k: v.to(args.device) for k, v in collate([rows[i] for i in pick]).items()}
        inputs = {k: b[k] for k in ("input_ids", "attention_mask", "position_ids")}
        t0 = time.perf_counter()
        keep = b["labels"] != IGNORE
        s = student(**inputs).logits[keep]
        if cache is None:
            with torch.no_grad():
                t = teacher(**inputs).logits[keep]
        else:
            t = cache(pick, device=args.device)
        loss = token_kd_loss(s, t, divergence=args.divergence)
        loss.backward()
        opt.step(), opt.zero_grad(set_to_none=True)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        if step:  # the first step warms up
            times.append(time.perf_counter() - t0)
    return {"step_s": statistics.median(times), "peak_bytes": _peak(args.device)}


def training(args: argparse.Namespace) -> None:
    out = {}
    for mode in ("live", "cache"):
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", mode, *sys.argv[1:]]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ)
        out[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    live, cache = out["live"], out["cache"]
    print(f"\n3. training step ({args.divergence}, batch {args.batch} x {args.seq}, student {args.student_layers} x "
          f"{args.student_embd}, median of {args.steps}):")
    for mode, r in out.items():
        print(f"   {mode:>5}: {r['step_s'] * 1e3:8.1f} ms/step, peak memory {r['peak_bytes'] / 2**20:8.1f} MiB")
    print(f"   cache / live: time x{cache['step_s'] / live['step_s']:.2f}, "
          f"peak memory x{cache['peak_bytes'] / live['peak_bytes']:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--vocab", type=int, default=32000, help="vocabulary of parts 2 and 3")
    p.add_argument("--teacher-layers", type=int, default=4)
    p.add_argument("--teacher-embd", type=int, default=256)
    p.add_argument("--student-layers", type=int, default=2)
    p.add_argument("--student-embd", type=int, default=128)
    p.add_argument("--rows", type=int, default=32)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--prompt", type=int, default=16)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--k", type=int, default=32, help="k of the cache of parts 2 and 3")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--divergence", default="forward_kl")
    p.add_argument("--storage-tokens", type=int, default=256, help="tokens of part 1 (N x V logits in memory)")
    p.add_argument("--logits", default=None, help="part 1: a .pt file with real (N, V) logits")
    p.add_argument("--zipf", type=float, default=1.5, help="part 1: exponent of the synthetic logits' ranks")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--skip-storage", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args.worker:
        print(json.dumps(worker(args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        args.cache_dir = args.cache_dir or tmp
        sys.argv += ["--cache-dir", args.cache_dir]
        if not args.skip_storage:
            storage(args)
            members_table(args)
        writing(args)
        training(args)


if __name__ == "__main__":
    main()
