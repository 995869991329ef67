"""Benchmark: divmin.sinkhorn against POT on batches of entropic OT problems (issue 21).

Problems: B pairs of random 2-d point clouds, squared Euclidean cost scaled to max 1 per
item, random positive weights, ``epsilon`` 0.05 and ``tol`` 1e-6 by default. Variants:

* ``divmin``: one batched :func:`divmin.sinkhorn` call (defaults: epsilon scaling 0.5);
* ``pot-np-loop``: ``ot.bregman.sinkhorn_log`` on numpy arrays, a Python loop over the batch;
* ``pot-torch-loop``: ``ot.sinkhorn2(..., method="sinkhorn_log")`` on torch tensors, looped;
* ``pot-torch-batch``: ``ot.batch.solve_batch(..., method="log_sinkhorn", reg_type="kl")``.

With ``--backward`` the forward+backward of the summed entropic value w.r.t. the cost is
timed too: divmin ``gradient="envelope"`` and ``"autodiff"``, POT looped (its backend's
envelope gradient: the plan) and batched (``grad="envelope"``). Rounds are interleaved
(every variant once per round, after a warm-up) and the medians of wall-clock and CPU
(process) time are reported with ratios measured in the same run; costs are checked
against divmin's. Memory of the gradient graph: bytes autograd saves for backward,
measured with ``saved_tensors_hooks`` at two iteration counts (``tol=0``).

    python benchmarks/sinkhorn.py                      # the three CPU sizes of issue 21
    python benchmarks/sinkhorn.py --backward --repeats 5
    python benchmarks/sinkhorn.py --device cuda --sizes 256x1024x1024:float32
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import ot
import torch

from divmin import sinkhorn

DEFAULT_SIZES = "64x256x256:float64,64x256x256:float32,8x1024x1024:float64"


def _problem(spec: str, device: str, seed: int = 0):
    shape, dtype = spec.split(":")
    B, n, m = (int(s) for s in shape.split("x"))
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(B, n, 2, generator=gen, dtype=torch.float64)
    y = torch.rand(B, m, 2, generator=gen, dtype=torch.float64)
    cost = torch.cdist(x, y) ** 2
    cost = cost / cost.amax((-2, -1), keepdim=True)
    a = torch.rand(B, n, generator=gen, dtype=torch.float64) + 0.5
    b = torch.rand(B, m, generator=gen, dtype=torch.float64) + 0.5
    dt = getattr(torch, dtype)
    return [t.to(device=device, dtype=dt) for t in (a / a.sum(-1, keepdim=True), b / b.sum(-1, keepdim=True), cost)]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _variants(a, b, C, eps: float, tol: float, backward: bool, device: str) -> dict:
    """name -> callable returning (per-item linear costs, iterations)."""

    def dm(gradient=None):
        def run():
            c = C.detach().requires_grad_(gradient is not None)
            res = sinkhorn(a, b, c, epsilon=eps, tol=tol, gradient=gradient or "envelope")
            if gradient is not None:
                res.objective.sum().backward()
            return res.cost.detach(), res.n_iter
        return run

    def pot_loop(grad: bool):
        def run():
            costs, iters = [], []
            for i in range(C.shape[0]):
                c = C[i].detach().requires_grad_(grad)
                val, log = ot.sinkhorn2(a[i], b[i], c, eps, method="sinkhorn_log", stopThr=tol, log=True)
                if grad:
                    val.backward()
                costs.append(val.detach())
                iters.append(log["niter"])
            return torch.stack(costs), max(iters)
        return run

    def pot_np():
        an, bn, cn = (t.cpu().numpy() for t in (a, b, C))
        costs, iters = [], []
        for i in range(C.shape[0]):
            plan, log = ot.bregman.sinkhorn_log(an[i], bn[i], cn[i], eps, stopThr=tol, log=True)
            costs.append(float((plan * cn[i]).sum()))
            iters.append(log["niter"])
        return torch.tensor(costs, dtype=C.dtype), max(iters)

    def pot_batch(grad: bool):
        def run():
            c = C.detach().requires_grad_(grad)
            res = ot.batch.solve_batch(c, eps, a, b, tol=tol, method="log_sinkhorn", reg_type="kl",
                                       grad="envelope" if grad else "detach")
            if grad:
                res.value.sum().backward()
            return res.value_linear.detach(), int(res.log["n_iter"])
        return run

    out = {"divmin": dm(), "pot-torch-loop": pot_loop(False), "pot-torch-batch": pot_batch(False)}
    if device == "cpu":
        out["pot-np-loop"] = pot_np
    if backward:
        out |= {"divmin fwd+bwd envelope": dm("envelope"), "divmin fwd+bwd autodiff": dm("autodiff"),
                "pot-torch-loop fwd+bwd": pot_loop(True), "pot-torch-batch fwd+bwd": pot_batch(True)}
    return out


def _time(fn, device: str) -> tuple[float, float, tuple]:
    _sync(device)
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    _sync(device)
    return time.perf_counter() - w, time.process_time() - c, out


def _graph_bytes(gradient: str, max_iter: int, device: str) -> int:
    """Bytes autograd saves for backward in one solve of an 8 x 128 x 128 float64 batch."""
    a, b, C = _problem("8x128x128:float64", device, seed=1)
    C = C.requires_grad_()
    seen: dict[int, int] = {}

    def pack(t):  # distinct storages: the same kernel saved by many products counts once
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sinkhorn(a, b, C, epsilon=0.05, tol=0.0, max_iter=max_iter, gradient=gradient).objective.sum().backward()
    return sum(seen.values())


def _bench(spec: str, args) -> None:
    a, b, C = _problem(spec, args.device)
    variants = _variants(a, b, C, args.epsilon, args.tol, args.backward, args.device)
    times = {k: ([], []) for k in variants}
    results = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # POT's own convergence chatter
        for name, fn in variants.items():  # warm-up, and the answers
            results[name] = fn()
        for _ in range(args.repeats):
            for name, fn in variants.items():
                wall, cpu, _ = _time(fn, args.device)
                times[name][0].append(wall)
                times[name][1].append(cpu)
    ref = results["divmin"][0].double().cpu()
    med = {k: (statistics.median(w), statistics.median(c)) for k, (w, c) in times.items()}
    print(f"\n## {spec} on {args.device}, epsilon={args.epsilon}, tol={args.tol}, {args.repeats} interleaved rounds")
    print(f"{'variant':28s} {'wall s':>8s} {'cpu s':>8s} {'iters':>6s} {'max rel cost diff vs divmin':>28s}")
    for name, (wall, cpu) in med.items():
        diff = float(((results[name][0].double().cpu() - ref).abs() / ref.abs()).max())
        print(f"{name:28s} {wall:8.3f} {cpu:8.3f} {results[name][1]:6d} {diff:28.2e}")
    for kind, col in (("wall", 0), ("cpu", 1)):
        fwd = {k: v[col] for k, v in med.items() if k.startswith("pot") and "bwd" not in k}
        best = min(fwd, key=fwd.get)
        line = f"speed-up ({kind}): divmin vs fastest POT ({best}) = {fwd[best] / med['divmin'][col]:.2f}x"
        if args.backward:
            bwd = {k: v[col] for k, v in med.items() if k.startswith("pot") and "bwd" in k}
            bb = min(bwd, key=bwd.get)
            line += (f"; fwd+bwd envelope vs fastest POT ({bb}) = "
                     f"{bwd[bb] / med['divmin fwd+bwd envelope'][col]:.2f}x")
        print(line)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated BxNxM:dtype")
    p.add_argument("--device", default="cpu")
    p.add_argument("--epsilon", type=float, default=0.05)
    p.add_argument("--tol", type=float, default=1e-6)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--backward", action="store_true", help="also time forward+backward")
    p.add_argument("--memory", action="store_true", help="measure the gradient graph's memory vs iterations")
    args = p.parse_args()
    print(f"torch {torch.__version__}, POT {ot.__version__}, threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()}")
    for spec in args.sizes.split(","):
        _bench(spec, args)
    if args.memory:
        print("\n## bytes saved for backward (8 x 128 x 128 float64), tol=0")
        for gradient in ("envelope", "autodiff"):
            sizes = {k: _graph_bytes(gradient, k, args.device) for k in (20, 200)}
            print(f"{gradient:9s} max_iter=20: {sizes[20] / 2**20:8.2f} MiB   max_iter=200: {sizes[200] / 2**20:8.2f} MiB")
    print(f"\nload average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
