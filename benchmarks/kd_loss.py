"""Benchmark: token-level distillation losses, forward + backward, against plain PyTorch, every member.

Two tables, each from one run, ratios to the plain PyTorch row of the same run:

``--mode logits`` (default): student logits (N, V) with a gradient, teacher logits a constant.
For every registry member with a categorical form (``--members`` to pick):

* ``plain``: PyTorch as one writes it (``log_softmax``, ``softmax``, the member's elementwise
  formula, sum over the vocabulary, mean over rows; autograd for the gradient);
* ``liger-torch``: the torch formulation Liger-Kernel's tests use as their reference, for the
  members Liger has a loss for (``kl_div`` with log targets for the KLs, ``lerp`` mixture for
  JSD, ``|p - q|/2`` for TVD), written here from scratch (Liger need not be installed);
* ``token_kd_loss`` and ``categorical_divergence``: divmin at their defaults.

``--mode fused``: from hidden states (N, H) and heads (V, H), generalized JS or ``--divergence``:
``plain`` (logits by matmul, then the plain loss), ``token_kd_loss`` on the same logits, and
:func:`divmin.distill.fused_linear_kd_loss` (never forms the N x V logits).

Peak memory ("extra": the resident-set high-water mark above what the inputs hold, CPU; max
allocated, CUDA) is measured in one separate process that runs every variant once, with
glibc told to return every freed block of 64 KiB or more to the system
(``MALLOC_MMAP_THRESHOLD_``), so one variant's freed memory does not hide the next one's
peak. Times come from one process with the variants interleaved round by round (median
of ``--repeats`` after a warm-up round). Run with ``OMP_NUM_THREADS=1`` on a shared machine
and compare ratios, not seconds.

    OMP_NUM_THREADS=1 python benchmarks/kd_loss.py --quick                  # N 512, a minute or two
    OMP_NUM_THREADS=1 python benchmarks/kd_loss.py                          # N 2048 x V 32000, fp32
    OMP_NUM_THREADS=1 python benchmarks/kd_loss.py --mode fused --hidden 256
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Callable

import torch
import torch.nn.functional as F

import divmin
from divmin.distill import fused_linear_kd_loss, token_kd_loss

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from categorical import DTYPES, _Peak  # noqa: E402  (the shared memory probe)

MEMBERS = ["forward_kl", "reverse_kl", "js", "generalized_js", "total_variation", "squared_hellinger", "alpha",
           "jeffreys", "pearson_chi2", "neyman_chi2", "skew_forward_kl", "skew_reverse_kl", "softened_forward_kl",
           "softened_reverse_kl"]


def _mix(lp: torch.Tensor, lq: torch.Tensor, w: float) -> torch.Tensor:
    """log(w P + (1 - w) Q), plainly."""
    return torch.log(w * lp.exp() + (1.0 - w) * lq.exp())


def plain_terms(div: divmin.Divergence, lp: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    """The member's elementwise formula as one writes it in PyTorch: D = sum of these over the vocabulary."""
    p, q = lp.exp(), lq.exp()
    name = div.name
    if name == "forward_kl":
        return p * (lp - lq)
    if name == "reverse_kl":
        return q * (lq - lp)
    if name in ("js", "generalized_js"):
        b = 0.5 if name == "js" else float(div.beta)
        lm = _mix(lp, lq, b)
        return (2.0 if name == "js" else 1.0) * (b * p * (lp - lm) + (1.0 - b) * q * (lq - lm))
    if name == "total_variation":
        return 0.5 * (p - q).abs()
    if name == "squared_hellinger":
        return (p.sqrt() - q.sqrt()) ** 2
    if name == "pearson_chi2":
        return (p - q) ** 2 / q
    if name == "neyman_chi2":
        return (p - q) ** 2 / p
    if name == "jeffreys":
        return (p - q) * (lp - lq)
    if name == "alpha":
        a = float(div.alpha)
        return (torch.exp(a * lp + (1.0 - a) * lq) - a * p - (1.0 - a) * q) / (a * (a - 1.0))
    if name in ("softened_forward_kl", "softened_reverse_kl"):
        lm = _mix(lp, lq, 0.5)
        return 2.0 * lm.exp() * (lm - (lq if name == "softened_forward_kl" else lp))
    if name == "skew_forward_kl":
        return p * (lp - _mix(lp, lq, float(div.skew)))
    if name == "skew_reverse_kl":
        return q * (lq - _mix(lp, lq, 1.0 - float(div.skew)))
    raise ValueError(f"no plain formula for {div}")


def plain_loss(div: divmin.Divergence, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    lq, lp = F.log_softmax(student.float(), -1), F.log_softmax(teacher.float(), -1)
    return plain_terms(div, lp, lq).sum() / student.shape[0]


def liger_torch_loss(div: divmin.Divergence, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor | None:
    """Liger-Kernel's torch reference formulation of the member's loss, or None if Liger has none."""
    n = student.shape[0]
    lq, lp = F.log_softmax(student.float(), -1), F.log_softmax(teacher.float(), -1)
    if div.name == "forward_kl":
        return F.kl_div(lq, lp, reduction="sum", log_target=True) / n
    if div.name == "reverse_kl":
        return F.kl_div(lp, lq, reduction="sum", log_target=True) / n
    if div.name in ("js", "generalized_js"):
        b = 0.5 if div.name == "js" else float(div.beta)
        log_m = torch.log(torch.lerp(lq.exp(), lp.exp(), b))
        loss = b * F.kl_div(log_m, lp, reduction="sum", log_target=True) \
            + (1.0 - b) * F.kl_div(log_m, lq, reduction="sum", log_target=True)
        return (2.0 if div.name == "js" else 1.0) * loss / n
    if div.name == "total_variation":
        return 0.5 * (lp.exp() - lq.exp()).abs().sum() / n
    return None


def _logits_step(variant: str, name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor | None]:
    div = divmin.divergence(name)
    return {"plain": lambda s, t: plain_loss(div, s, t),
            "liger-torch": lambda s, t: liger_torch_loss(div, s, t),
            "token_kd_loss": lambda s, t: token_kd_loss(s, t, divergence=div),
            "categorical_divergence": lambda s, t: divmin.categorical_divergence(s, t, divergence=div)}[variant]


LOGIT_VARIANTS = ["plain", "liger-torch", "token_kd_loss", "categorical_divergence"]
FUSED_VARIANTS = ["plain", "token_kd_loss", "fused"]


def _inputs(args: argparse.Namespace) -> dict[str, torch.Tensor]:
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    gen = torch.Generator(device=device).manual_seed(0)
    mk = lambda *s, sd=1.0: (sd * torch.randn(*s, generator=gen, device=device)).to(dtype)  # noqa: E731
    if args.mode == "logits":
        return {"s": mk(args.tokens, args.vocab, sd=2.0).requires_grad_(), "t": mk(args.tokens, args.vocab, sd=2.0)}
    sd = 3 * args.hidden ** -0.5
    return {"hs": mk(args.tokens, args.hidden).requires_grad_(), "ws": mk(args.vocab, args.hidden, sd=sd).requires_grad_(),
            "ht": mk(args.tokens, args.hidden), "wt": mk(args.vocab, args.hidden, sd=sd)}


def _run(case: tuple[str, str], x: dict[str, torch.Tensor], args: argparse.Namespace) -> float | None:
    """One forward + backward of ``(variant, member)``; the loss, or None if the variant has no such loss."""
    variant, name = case
    for v in x.values():
        v.grad = None
    if args.mode == "logits":
        loss = _logits_step(variant, name)(x["s"], x["t"])
    else:
        div = divmin.divergence(name)
        if variant == "fused":
            loss = fused_linear_kd_loss(x["hs"], x["ws"], x["ht"], x["wt"], divergence=div)
        else:
            s, t = x["hs"] @ x["ws"].T, (x["ht"] @ x["wt"].T).detach()
            loss = plain_loss(div, s, t) if variant == "plain" else token_kd_loss(s, t, divergence=div)
    if loss is None:
        return None
    loss.backward()
    return float(loss.detach())


def _cases(args: argparse.Namespace) -> list[tuple[str, str]]:
    variants = LOGIT_VARIANTS if args.mode == "logits" else FUSED_VARIANTS
    return [(v, m) for m in args.members for v in variants
            if not (v == "liger-torch" and liger_torch_loss(divmin.divergence(m), torch.zeros(1, 2), torch.zeros(1, 2)) is None)]


def memory_worker(args: argparse.Namespace) -> list[dict]:
    """Peak extra memory of every case, one after the other, in this (fresh) process."""
    x = _inputs(args)
    small = {k: v[:4].detach().clone().requires_grad_(v.requires_grad) for k, v in x.items()}
    out = []
    for case in _cases(args):
        _run(case, small, args)  # warm up kernels so the peak below is the loss's own
        with _Peak(torch.device(args.device)) as peak:
            value = _run(case, x, args)
        for v in x.values():
            v.grad = None
        out.append({"variant": case[0], "member": case[1], "value": value, "extra_bytes": peak.extra})
    return out


def time_cases(args: argparse.Namespace, cases: list[tuple[str, str]]) -> dict[tuple[str, str], float]:
    x = _inputs(args)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    times: dict[tuple[str, str], list[float]] = {c: [] for c in cases}
    for member in args.members:
        mine = [c for c in cases if c[1] == member]
        for c in mine:  # warm-up round
            _run(c, x, args)
        for _ in range(args.repeats):
            for c in mine:
                sync()
                t0 = time.perf_counter()
                _run(c, x, args)
                sync()
                times[c].append(time.perf_counter() - t0)
    return {c: statistics.median(ts) for c, ts in times.items()}


def _memory(args: argparse.Namespace) -> list[dict]:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker"] + [
        f"--{k.replace('_', '-')}={','.join(v) if isinstance(v, list) else v}"
        for k, v in vars(args).items() if k not in ("worker", "quick") and v is not None]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"memory worker failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=["logits", "fused"], default="logits")
    p.add_argument("--tokens", type=int, default=None, help="rows N (default 2048; 512 with --quick)")
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--hidden", type=int, default=256, help="fused mode: hidden size H")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--members", type=lambda s: s.split(","), default=None,
                   help="comma-separated registry names (default: every member; fused: generalized_js)")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (default 3; 2 with --quick)")
    p.add_argument("--quick", action="store_true", help="N 512, 2 rounds: a first look in a minute or two")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.tokens = args.tokens or (512 if args.quick else 2048)
    args.repeats = args.repeats or (2 if args.quick else 3)
    args.members = args.members or (MEMBERS if args.mode == "logits" else ["generalized_js"])
    if args.worker:
        print(json.dumps(memory_worker(args)))
        return
    shape = f"N={args.tokens} V={args.vocab}" + (f" H={args.hidden}" if args.mode == "fused" else "")
    print(f"KD loss fwd+bwd ({args.mode}), {shape} {args.dtype} on {args.device}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.2f}", flush=True)
    mem = _memory(args)
    timed = time_cases(args, [(r["variant"], r["member"]) for r in mem])
    print(f"{'member':<22}{'variant':<24}{'loss':>12}{'time (s)':>10}{'x plain':>9}{'extra MiB':>11}{'x plain':>9}")
    for member in args.members:
        rows = [r for r in mem if r["member"] == member]
        base = next(r for r in rows if r["variant"] == "plain")
        t_base = timed[("plain", member)]
        for r in rows:
            t = timed[(r["variant"], member)]
            print(f"{member:<22}{r['variant']:<24}{r['value']:>12.6f}{t:>10.3f}{t / t_base:>9.2f}"
                  f"{r['extra_bytes'] / 2**20:>11.1f}{r['extra_bytes'] / max(base['extra_bytes'], 1):>9.3f}")
    print(f"load at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
