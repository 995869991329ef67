"""Benchmark: `categorical_divergence` (chunked and not) vs plain PyTorch written as TRL's GKD loss.

Forward + backward of the generalized JS (beta = 0.5, TRL GKD's default) between
teacher logits (no grad) and student logits (grad), N rows x V classes. Each
variant runs in its own subprocess so that peak memory is measured from a clean
process: on CUDA with ``torch.cuda.max_memory_allocated``, on CPU with the
kernel's resident-set high-water mark (VmHWM, reset through /proc/self/clear_refs).
"Extra" memory is the peak minus what the inputs already occupy.

Variants: ``plain`` (TRL GKD style), ``unchunked`` / ``chunked`` (the torch
backend), and on CUDA ``triton`` (the Triton backend) and ``liger-jsd``
(Liger-Kernel's JSD kernel after the two log-softmaxes it needs) when they import.

    python benchmarks/categorical.py                          # CPU: N=4096, V=32000, fp32
    python benchmarks/categorical.py --device cuda --rows 8192 --vocab 128256 --dtype bf16

Peak memory is measured per variant in a fresh subprocess; times are measured in
one process with the variants interleaved round by round (median of --repeats
after a warm-up round), so that load on a noisy machine affects all alike. Prints
a table with the ratios to the plain PyTorch baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

import divmin

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def gkd_style_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float = 0.5) -> torch.Tensor:
    """The plain-PyTorch baseline, written the way TRL's GKD loss is: full (N, V) log-softmaxes,
    a stacked log-sum-exp for the mixture, two elementwise KLs, mean over rows."""
    s_lp = F.log_softmax(student_logits, dim=-1)
    t_lp = F.log_softmax(teacher_logits, dim=-1)
    w = torch.tensor([1.0 - beta, beta], dtype=s_lp.dtype, device=s_lp.device).log()
    m_lp = torch.logsumexp(torch.stack([s_lp + w[0], t_lp + w[1]]), dim=0)
    kl_t = F.kl_div(m_lp, t_lp, reduction="none", log_target=True)
    kl_s = F.kl_div(m_lp, s_lp, reduction="none", log_target=True)
    return (beta * kl_t + (1.0 - beta) * kl_s).sum() / s_lp.shape[0]


def _rss_bytes(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


class _Peak:
    """Peak memory above the current level during a `with` block."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self) -> "_Peak":
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # resets VmHWM to the current RSS
            self.base = _rss_bytes("VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.extra = torch.cuda.max_memory_allocated() - self.base
        else:
            self.extra = _rss_bytes("VmHWM") - self.base


def _step(variant: str, student: torch.Tensor, teacher: torch.Tensor, chunk: int) -> float:
    student.grad = None
    if variant == "plain":
        loss = gkd_style_loss(student, teacher)
    elif variant == "liger-jsd":
        from liger_kernel.transformers import LigerJSD

        loss = LigerJSD(beta=0.5)(torch.log_softmax(student.float(), -1), torch.log_softmax(teacher.float(), -1))
    else:
        loss = divmin.categorical_divergence(
            student, teacher, divergence="generalized_js", chunk_size=chunk if variant == "chunked" else None,
            backend="triton" if variant == "triton" else "torch",
        )
    loss.backward()
    return float(loss.detach())


def _gpu_variants() -> list[str]:
    out = []
    for variant, module in (("triton", "triton"), ("liger-jsd", "liger_kernel")):
        if importlib.util.find_spec(module) is None:
            print(f"{module} not importable: no {variant} row")
        else:
            out.append(variant)
    return out


def _inputs(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    device = torch.device(args.device)
    gen = torch.Generator(device=device).manual_seed(0)
    dtype = DTYPES[args.dtype]
    teacher = (2 * torch.randn(args.rows, args.vocab, generator=gen, device=device)).to(dtype)
    student = (2 * torch.randn(args.rows, args.vocab, generator=gen, device=device)).to(dtype).requires_grad_()
    return student, teacher


def memory_worker(args: argparse.Namespace) -> dict:
    """Peak extra memory of one variant, in a fresh process."""
    student, teacher = _inputs(args)
    # warm up kernels and thread pools on a tiny problem so the peak below is the loss's own
    _step(args.worker, student[:2, :64].detach().clone().requires_grad_(), teacher[:2, :64], args.chunk_size)
    with _Peak(torch.device(args.device)) as peak:
        value = _step(args.worker, student, teacher, args.chunk_size)
    return {"variant": args.worker, "value": value, "extra_bytes": peak.extra}


def time_variants(args: argparse.Namespace, variants: list[str]) -> dict[str, float]:
    """Median time per variant, rounds interleaved so that machine noise hits all alike."""
    student, teacher = _inputs(args)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    times: dict[str, list[float]] = {v: [] for v in variants}
    for v in variants:  # warm-up round
        _step(v, student, teacher, args.chunk_size)
    for _ in range(args.repeats):
        for v in variants:
            sync()
            t0 = time.perf_counter()
            _step(v, student, teacher, args.chunk_size)
            sync()
            times[v].append(time.perf_counter() - t0)
    return {v: statistics.median(ts) for v, ts in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=4096)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--chunk-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--worker", choices=["plain", "unchunked", "chunked", "triton", "liger-jsd"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(memory_worker(args)))
        return
    print(f"categorical_divergence, generalized_js(0.5), fwd+bwd, N={args.rows} V={args.vocab} "
          f"{args.dtype} on {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    variants = ["plain", "unchunked", "chunked"] + (_gpu_variants() if args.device.startswith("cuda") else [])
    rows = []
    for variant in variants:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", variant] + [
            f"--rows={args.rows}", f"--vocab={args.vocab}", f"--dtype={args.dtype}",
            f"--device={args.device}", f"--chunk-size={args.chunk_size}", f"--repeats={args.repeats}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            err = (proc.stderr.strip().splitlines() or ["?"])[-1]
            print(f"{variant}: failed ({err[:120]})")
            rows.append({"variant": variant, "value": float("nan"), "extra_bytes": float("nan")})
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    timed = time_variants(args, [r["variant"] for r in rows if r["extra_bytes"] == r["extra_bytes"]])
    for r in rows:
        r["time_s"] = timed.get(r["variant"], float("nan"))
    base = rows[0]
    print(f"{'variant':<22}{'loss':>12}{'time (s)':>11}{'x plain':>9}{'peak extra (MiB)':>18}{'x plain':>9}")
    for r in rows:
        name = r["variant"] + (f" (chunk {args.chunk_size})" if r["variant"] == "chunked" else "")
        print(f"{name:<22}{r['value']:>12.6f}{r['time_s']:>11.3f}{r['time_s'] / base['time_s']:>9.2f}"
              f"{r['extra_bytes'] / 2**20:>18.1f}{r['extra_bytes'] / max(base['extra_bytes'], 1):>9.3f}")


if __name__ == "__main__":
    main()
