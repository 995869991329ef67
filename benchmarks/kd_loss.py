"""Benchmark: distillation losses from hidden states, fused and not, vs plain PyTorch (TRL GKD style).

Forward + backward of the generalized JS (beta = 0.5, TRL GKD's default) between
a teacher and a student that share the tokens: student hidden states (N, H) and
head (V, H) get gradients, teacher hidden states and head are constants.

* ``plain``: logits = h @ W^T for both, then the loss written as TRL's GKD writes it
  (full log-softmaxes, a stacked log-sum-exp for the mixture, two elementwise KLs);
* ``token_kd_loss``: the same logits, then :func:`divmin.distill.token_kd_loss`
  (closed form, chunked analytic backward);
* ``fused``: :func:`divmin.distill.fused_linear_kd_loss`, ``backend="torch"`` (never forms the
  N x V logits);
* ``fused-triton``: the same with ``backend="triton"`` (per-row kernel, gradients in place),
  when the device is CUDA and ``triton`` imports;
* ``liger``: Liger-Kernel's ``LigerFusedLinearJSDLoss``, when ``liger_kernel`` imports
  and the device is CUDA.

Peak memory is measured per variant in a fresh subprocess (CUDA: max allocated;
CPU: the resident-set high-water mark VmHWM, reset through /proc/self/clear_refs);
"extra" is the peak above what the inputs already occupy, so the gradients of h
and W (N x H + V x H) count in every variant. Times come from one process with
the variants interleaved round by round (median of --repeats after a warm-up).

    python benchmarks/kd_loss.py                                   # CPU: 4096 x 32000 x 256, fp32
    python benchmarks/kd_loss.py --device cuda --tokens 8192 --vocab 128256 --hidden 4096 --dtype bf16
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from divmin.distill import fused_linear_kd_loss, token_kd_loss

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from categorical import DTYPES, _Peak, gkd_style_loss  # noqa: E402  (shared baseline and memory probe)

BETA = 0.5


def _liger_loss():
    from liger_kernel.transformers import LigerFusedLinearJSDLoss

    return LigerFusedLinearJSDLoss(jsd_beta=BETA, temperature=1.0)


def _inputs(args: argparse.Namespace) -> tuple[torch.Tensor, ...]:
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    gen = torch.Generator(device=device).manual_seed(0)
    scale = args.hidden ** -0.5
    mk = lambda *s, sd=1.0: (sd * torch.randn(*s, generator=gen, device=device)).to(dtype)  # noqa: E731
    hs, ws = mk(args.tokens, args.hidden).requires_grad_(), mk(args.vocab, args.hidden, sd=3 * scale).requires_grad_()
    ht, wt = mk(args.tokens, args.hidden), mk(args.vocab, args.hidden, sd=3 * scale)
    return hs, ws, ht, wt


def _step(variant: str, hs, ws, ht, wt, args: argparse.Namespace, liger=None) -> float:
    hs.grad = ws.grad = None
    if variant == "plain":
        loss = gkd_style_loss(hs @ ws.T, (ht @ wt.T).detach(), beta=BETA)
    elif variant == "token_kd_loss":
        loss = token_kd_loss(hs @ ws.T, (ht @ wt.T).detach(), divergence=_div(), chunk_size=args.chunk_size)
    elif variant in ("fused", "fused-triton"):
        backend = "triton" if variant == "fused-triton" else "torch"
        loss = fused_linear_kd_loss(hs, ws, ht, wt, divergence=_div(), chunk_size=args.fused_chunk, backend=backend)
    else:
        loss = liger(hs, ws, ht, wt)
    loss.backward()
    return float(loss.detach())


def _div():
    import divmin

    return divmin.divergence("generalized_js", beta=BETA)


def memory_worker(args: argparse.Namespace) -> dict:
    """Peak extra memory of one variant, in a fresh process."""
    hs, ws, ht, wt = _inputs(args)
    liger = _liger_loss() if args.worker == "liger" else None
    small = [t[:8].detach().clone() for t in (hs, ht)] + [ws[:64].detach().clone(), wt[:64].detach().clone()]
    small[0].requires_grad_(), small[2].requires_grad_()
    _step(args.worker, small[0], small[2], small[1], small[3], args, liger)  # warm up kernels and pools
    with _Peak(torch.device(args.device)) as peak:
        value = _step(args.worker, hs, ws, ht, wt, args, liger)
    return {"variant": args.worker, "value": value, "extra_bytes": peak.extra}


def time_variants(args: argparse.Namespace, variants: list[str]) -> dict[str, float]:
    hs, ws, ht, wt = _inputs(args)
    liger = _liger_loss() if "liger" in variants else None
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    times: dict[str, list[float]] = {v: [] for v in variants}
    for v in variants:
        _step(v, hs, ws, ht, wt, args, liger)
    for _ in range(args.repeats):
        for v in variants:
            sync()
            t0 = time.perf_counter()
            _step(v, hs, ws, ht, wt, args, liger)
            sync()
            times[v].append(time.perf_counter() - t0)
    return {v: statistics.median(ts) for v, ts in times.items()}


def _variants(args: argparse.Namespace) -> list[str]:
    out = ["plain", "token_kd_loss", "fused"]
    if args.device.startswith("cuda"):
        try:
            import triton  # noqa: F401  (availability check)

            out.append("fused-triton")
        except ImportError:
            print("triton not importable: no fused-triton row")
        try:
            import liger_kernel  # noqa: F401  (availability check)

            out.append("liger")
        except ImportError:
            print("liger_kernel not importable: no Liger row")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--chunk-size", type=int, default=256, help="token_kd_loss rows per backward chunk")
    p.add_argument("--fused-chunk", type=int, default=None, help="fused rows per chunk (default: automatic)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(memory_worker(args)))
        return
    print(f"KD loss fwd+bwd, generalized_js({BETA}), N={args.tokens} V={args.vocab} H={args.hidden} {args.dtype} "
          f"on {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    rows = []
    for variant in _variants(args):
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", variant] + [
            f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k != "worker" and v is not None]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            err = (proc.stderr.strip().splitlines() or ["?"])[-1]
            print(f"{variant}: failed ({err[:160]})")
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    timed = time_variants(args, [r["variant"] for r in rows])
    base = next((r for r in rows if r["variant"] == "plain"), rows[0])
    base["time_s"] = timed[base["variant"]]
    print(f"{'variant':<16}{'loss':>12}{'time (s)':>11}{'x plain':>9}{'peak extra (MiB)':>18}{'x plain':>9}")
    for r in rows:
        r["time_s"] = timed[r["variant"]]
        print(f"{r['variant']:<16}{r['value']:>12.6f}{r['time_s']:>11.4f}{r['time_s'] / base['time_s']:>9.2f}"
              f"{r['extra_bytes'] / 2**20:>18.1f}{r['extra_bytes'] / max(base['extra_bytes'], 1):>9.3f}")


if __name__ == "__main__":
    main()
