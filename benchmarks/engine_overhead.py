"""Benchmark: the engine's overhead against a hand-written loop doing the same KD step.

One process (1 thread) holds two identical students (``divmin.lm.tiny_gpt2``, 2 layers,
width 64, vocab 1000), one frozen teacher, and the same rows (random token ids, prompt +
completion up to 63 tokens). Each step, on a batch of 8 rows: data loading, the student's
and the teacher's forward, ``token_kd_loss`` (generalized JS, beta 0.5) on the completion
tokens, backward, clipping at 1.0, torch AdamW at lr 1e-4. Both read the (already random)
rows in order, unshuffled, so step i of each sees the same batch. The engine runs it as a
``Task`` under ``divmin.engine.Trainer`` (constant schedule, ``log_every`` 10, no progress
bar, no TensorBoard); the hand-written loop is the few lines of plain PyTorch in
``_HandLoop.step`` (it reads the loss every 10 steps, as the engine logs it).

The two alternate step for step in the same process, so load hits both alike: a hook on
the engine's step runs one hand-written step before each engine step. An engine step's
time runs from its start to the start of the next one, so it includes everything the
engine's loop does between steps (metric logging, bookkeeping). The first ``--warmup``
steps are dropped. Printed: median step times and steps/s of both, then a cProfile of
the engine alone over ``--steps`` steps, its self time split into the engine's own code
(``divmin.engine`` and Accelerate, with the builtins they call directly) and the rest,
and last the median steps/s ratio engine / hand-written (1.0 = no overhead).

    OMP_NUM_THREADS=1 python benchmarks/engine_overhead.py --quick           # 30 steps each
    OMP_NUM_THREADS=1 python benchmarks/engine_overhead.py --steps 300
    OMP_NUM_THREADS=1 python benchmarks/engine_overhead.py --aa --steps 200  # noise floor: hand vs hand

``--aa`` runs the A/A control instead: two copies of the hand-written loop, alternating the
same way, timed the same way; their ratio's distance from 1.0 is the harness's noise floor.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import time
from typing import Any

import torch
from torch.utils.data import DataLoader

from _common import BATCH, MAX_LEN, VOCAB, load, print_table, prompt_completion_rows, right_padded, spread, tiny

LR, CLIP, LOG_EVERY = 1e-4, 1.0, 10


def _collate(batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
    """Right-padded ids and mask; ``labels[:, t]`` is the completion token logits[:, t] predicts, else -100."""
    return right_padded(batch, shift=1)


def _kd_loss(student: torch.nn.Module, teacher: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The step's loss, shared verbatim by both contestants."""
    import divmin
    from divmin.distill import token_kd_loss

    logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    with torch.no_grad():
        target = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return token_kd_loss(logits, target, divergence=divmin.divergence("generalized_js", beta=0.5),
                         labels=batch["labels"])


class _KDTask:
    """The engine's side: the KD step as a ``divmin.engine.Task``."""

    static_models = ("teacher",)

    def __init__(self, student: torch.nn.Module, teacher: torch.nn.Module, rows: list[dict[str, list[int]]]) -> None:
        self.student, self.teacher, self.rows = student, teacher, rows

    def models(self) -> dict[str, torch.nn.Module]:
        return {"student": self.student, "teacher": self.teacher}

    def optimizers(self, models: dict[str, torch.nn.Module]) -> dict[str, torch.optim.Optimizer]:
        return {"student": torch.optim.AdamW(models["student"].parameters(), lr=LR, weight_decay=0.0)}

    def batches(self, ctx: Any) -> DataLoader:
        return DataLoader(self.rows, batch_size=BATCH, shuffle=False, collate_fn=_collate)

    def train_step(self, batch: dict[str, torch.Tensor], ctx: Any) -> Any:
        from divmin.engine import StepOutput

        return StepOutput(loss=_kd_loss(ctx.models["student"], ctx.models["teacher"], batch))


class _HandLoop:
    """The hand-written side: the same step in plain PyTorch."""

    def __init__(self, student: torch.nn.Module, teacher: torch.nn.Module, rows: list[dict[str, list[int]]]) -> None:
        self.student, self.teacher = student.train(), teacher.eval().requires_grad_(False)
        self.opt = torch.optim.AdamW(student.parameters(), lr=LR, weight_decay=0.0)
        self.loader = DataLoader(rows, batch_size=BATCH, shuffle=False, collate_fn=_collate)
        self.it = iter(self.loader)
        self.n = 0

    def step(self) -> None:
        try:
            batch = next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            batch = next(self.it)
        self.opt.zero_grad(set_to_none=True)
        loss = _kd_loss(self.student, self.teacher, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.student.parameters(), CLIP)
        self.opt.step()
        self.n += 1
        if self.n % LOG_EVERY == 0:
            self.last_loss = loss.item()


def _engine(steps: int, rows: list[dict[str, list[int]]]) -> Any:
    from divmin.engine import EngineConfig, Trainer

    cfg = EngineConfig(max_steps=steps, log_every=LOG_EVERY, progress=False, tensorboard=False,
                       max_grad_norm=CLIP, lr_schedule="constant", cpu=True)
    return Trainer(_KDTask(tiny(1), tiny(0), rows), cfg)


def interleaved(args: argparse.Namespace) -> tuple[list[float], list[float]]:
    """(engine step times, hand-written step times), alternating step for step."""
    import divmin.engine._trainer as engine_trainer

    rows = prompt_completion_rows(args.rows, 0)
    hand = _HandLoop(tiny(1), tiny(0), rows)
    engine_times: list[float] = []
    hand_times: list[float] = []
    started: list[float] = []
    inner = engine_trainer.Trainer._train_step

    def hooked(self: Any, run: Any, step: int) -> None:
        if started:
            engine_times.append(time.perf_counter() - started[-1])  # the previous engine step, loop included
        t0 = time.perf_counter()
        hand.step()
        hand_times.append(time.perf_counter() - t0)
        started.append(time.perf_counter())
        inner(self, run, step)

    engine_trainer.Trainer._train_step = hooked  # the benchmark's own hook
    try:
        _engine(args.warmup + args.steps + 1, rows).fit()  # +1: the last step's end is not timed
    finally:
        engine_trainer.Trainer._train_step = inner
    return engine_times[args.warmup:], hand_times[args.warmup:args.warmup + args.steps]


def aa(args: argparse.Namespace) -> tuple[list[float], list[float]]:
    """The A/A control: two hand-written loops alternating step for step, each timed like the engine."""
    rows = prompt_completion_rows(args.rows, 0)
    first, second = _HandLoop(tiny(1), tiny(0), rows), _HandLoop(tiny(1), tiny(0), rows)
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(args.warmup + args.steps):
        for loop, out in ((first, times[0]), (second, times[1])):
            t0 = time.perf_counter()
            loop.step()
            out.append(time.perf_counter() - t0)
    return times[0][args.warmup:], times[1][args.warmup:]


def _group(filename: str) -> str:
    if "divmin/engine" in filename or "/accelerate/" in filename:
        return "engine (divmin.engine + Accelerate)"
    if "/divmin/" in filename:
        return "divmin losses"
    if "/transformers/" in filename:
        return "model (transformers)"
    if "/torch/" in filename:
        return "torch (Python side)"
    if "engine_overhead.py" in filename:
        return "benchmark task"
    return "other Python"


def profile(args: argparse.Namespace) -> None:
    """cProfile the engine alone after warm-up; self time per group, builtins charged to their direct caller."""
    import divmin.engine._trainer as engine_trainer

    prof = cProfile.Profile()
    inner = engine_trainer.Trainer._train_step

    def hooked(self: Any, run: Any, step: int) -> None:
        if step == args.warmup:
            prof.enable()
        inner(self, run, step)

    engine_trainer.Trainer._train_step = hooked
    try:
        _engine(args.warmup + args.steps, prompt_completion_rows(args.rows, 0)).fit()
    finally:
        prof.disable()
        engine_trainer.Trainer._train_step = inner
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    groups: dict[str, float] = {}
    for (filename, _, _), (_, _, tt, _, callers) in stats.items():
        if filename == "~" and callers:  # a builtin: split its self time over its callers
            total = sum(c[2] for c in callers.values()) or 1.0
            for (cfile, _, _), c in callers.items():
                key = _group(cfile)
                groups[key] = groups.get(key, 0.0) + tt * c[2] / total
        else:
            groups[_group(filename)] = groups.get(_group(filename), 0.0) + tt
    whole = sum(groups.values())
    print(f"cProfile of the engine alone, {args.steps} steps, {1e3 * whole / args.steps:.1f} ms/step (profiled): "
          "self time by group")
    for key, value in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"  {key:<40}{100 * value / whole:>6.1f}%")
    engine_funcs = sorted(((v[2], k) for k, v in stats.items() if _group(k[0]).startswith("engine")), reverse=True)
    print("  the engine's costliest functions (self time per step):")
    for tt, (filename, line, name) in engine_funcs[:8]:
        short = filename.split("site-packages/")[-1].split("src/")[-1]
        print(f"    {1e6 * tt / args.steps:8.0f} us  {name} ({short}:{line})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=None, help="timed steps of each (default 200; 30 with --quick)")
    p.add_argument("--warmup", type=int, default=5, help="untimed first steps")
    p.add_argument("--rows", type=int, default=256, help="dataset rows")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--aa", action="store_true", help="A/A control: the hand-written loop against itself")
    args = p.parse_args()
    args.steps = args.steps or (30 if args.quick else 200)
    torch.set_num_threads(1)
    what = "A/A control: hand-written loop vs itself" if args.aa else "engine vs hand-written loop"
    print(f"{what}, KD step (generalized JS 0.5), tiny_gpt2 (2 x 64, vocab {VOCAB}), batch "
          f"{BATCH}, <= {MAX_LEN} tokens, fp32 CPU, torch {torch.__version__}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, load {load()}", flush=True)
    if args.aa:
        engine, hand = aa(args)  # "engine" is the second hand-written loop here
        print_table({"hand B": (engine, [], 0), "hand A": (hand, [], 0)})
        print(f"load at the end {load()}")
        mid, lo, hi = spread(engine, hand)
        print(f"A/A control: per-pair ratio median {mid:.2f} (quartiles {lo:.2f}-{hi:.2f}); median steps/s ratio "
              f"hand B / hand A: {statistics.median(hand) / statistics.median(engine):.3f}x")
        return
    engine, hand = interleaved(args)
    print_table({"engine": (engine, [], 0), "hand": (hand, [], 0)})
    profile(args)
    ratio = statistics.median(hand) / statistics.median(engine)
    mid, lo, hi = spread(engine, hand)
    print(f"load at the end {load()}; per-pair ratio median {mid:.2f} (quartiles {lo:.2f}-{hi:.2f})")
    print(f"median steps/s ratio engine / hand-written loop: {ratio:.2f}x (overhead {100 * (1 / ratio - 1):+.1f}%)")


if __name__ == "__main__":
    main()
