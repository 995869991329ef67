"""Shared pieces of the trainer benchmarks: the tiny model, step alternation, the report.

Every trainer benchmark here runs its contestants in long-lived processes (or, for the
engine against a hand-written loop, in one process) and alternates their steps one for
one, so load on a shared machine hits both alike; ratios are taken from the same run.
The scripts import this module as ``_common`` (``python benchmarks/<script>.py`` puts
``benchmarks/`` first on the path).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import resource
import statistics
import time
from typing import Any, Callable

VOCAB = 1000  # tiny_gpt2's vocabulary; ids 0, 1, 2 are [PAD], [EOS], [UNK]
BATCH = 8
MAX_LEN = 63  # tokens per row, prompt + response (+ EOS)


def tiny(seed: int) -> Any:
    """``divmin.lm.tiny_gpt2``: 2 layers, width 64, vocab 1000, 64 positions."""
    from divmin.lm import tiny_gpt2

    return tiny_gpt2(VOCAB, seed=seed, n_layer=2, n_embd=64, n_positions=64)


def word_vocab() -> list[str]:
    """The words of ``tokenizer()`` in id order: the three special tokens, then w3 ... w999."""
    return ["[PAD]", "[EOS]", "[UNK]"] + [f"w{i}" for i in range(3, VOCAB)]


def tokenizer() -> Any:
    """A word-level fast tokenizer over ``word_vocab()``: text "w5 w17" is ids [5, 17]."""
    from divmin.lm import word_tokenizer

    return word_tokenizer(word_vocab())


def prompt_completion_rows(n: int, seed: int) -> list[dict[str, list[int]]]:
    """``n`` rows of random word ids (never a special token): a 4 to 24 token prompt and a completion
    of at least 8 tokens, ``MAX_LEN`` in all at most."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        plen = rng.randint(4, 24)
        clen = rng.randint(8, MAX_LEN - plen)
        rows.append({"prompt_ids": [rng.randrange(3, VOCAB) for _ in range(plen)],
                     "completion_ids": [rng.randrange(3, VOCAB) for _ in range(clen)]})
    return rows


def right_padded(batch: list[dict[str, list[int]]], *, shift: int) -> dict[str, Any]:
    """Rows of ``prompt_completion_rows`` right-padded with id 0: ids, mask, and labels holding the completion
    tokens at their own positions (``shift=0``, Hugging Face's convention: the model shifts) or one earlier
    (``shift=1``: ``labels[:, t]`` is what ``logits[:, t]`` predicts), -100 elsewhere."""
    import torch

    width = max(len(r["prompt_ids"]) + len(r["completion_ids"]) for r in batch)
    ids = torch.zeros(len(batch), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, r in enumerate(batch):
        seq = r["prompt_ids"] + r["completion_ids"]
        ids[i, :len(seq)] = torch.tensor(seq)
        mask[i, :len(seq)] = 1
        labels[i, len(r["prompt_ids"]) - shift:len(seq) - shift] = torch.tensor(r["completion_ids"])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def timed_engine(baton: "Baton") -> Any:
    """Hook divmin's engine so that every engine step ends with ``baton.step_done()``, and return the
    benchmarks' ``EngineConfig`` for ``baton.total`` steps (AdamW by the method, clipping 1.0, constant lr)."""
    import divmin.engine._trainer as engine_trainer
    from divmin.engine import EngineConfig

    inner = engine_trainer.Trainer._train_step

    def timed_step(self: Any, run: Any, step: int) -> None:
        inner(self, run, step)
        baton.step_done()

    engine_trainer.Trainer._train_step = timed_step  # the benchmark's own hook: time each engine step
    return EngineConfig(max_steps=baton.total, log_every=10, progress=False, tensorboard=False,
                        max_grad_norm=1.0, lr_schedule="constant")


class Baton:
    """Step-by-step alternation between two processes, and the time each step held the baton.

    ``take()`` waits for this process's turn and starts the clocks; ``step_done()`` records
    the step's wall and CPU time, hands the turn over and (unless this was the last step)
    waits for it again.
    """

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


def _worker(run: Callable[[Any, Baton], Any], args: Any, warmup: int, total: int, mine: Any, theirs: Any,
            results: Any, name: str) -> None:
    import torch

    torch.set_num_threads(1)
    baton = Baton(mine, theirs, total)
    extra = None
    try:
        extra = run(args, baton)
    finally:
        theirs.set()  # never leave the other process waiting
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    results.put((name, baton.times[warmup:], baton.cpu[warmup:], peak, extra))


def run_interleaved(contestants: dict[str, Callable[[Any, Baton], Any]], args: Any, warmup: int,
                    steps: int) -> dict[str, tuple[list[float], list[float], int, Any]]:
    """Run two contestants in two spawned processes whose steps alternate one for one.

    ``contestants`` maps a name to ``run(args, baton)`` (a module-level function: it is
    pickled to the child): it builds its trainer, calls ``baton.take()`` before its first
    step and ``baton.step_done()`` after each; what it returns comes back as ``extra``.
    The first name takes the first step. Returns name -> (step times after ``warmup``, CPU
    times, peak RSS in bytes, extra).
    """
    if len(contestants) != 2:
        raise ValueError(f"`contestants` must name two runs, got {sorted(contestants)}")
    ctx = mp.get_context("spawn")
    names = list(contestants)
    turns = {n: ctx.Event() for n in names}
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(contestants[n], args, warmup, warmup + steps, turns[n],
                                                turns[names[1 - i]], results, n))
             for i, n in enumerate(names)]
    for proc in procs:
        proc.start()
    turns[names[0]].set()  # the first takes the first step once it is set up; then they alternate
    got = {}
    for _ in procs:
        name, times, cpu, peak, extra = results.get()
        got[name] = (times, cpu, peak, extra)
    for proc in procs:
        proc.join()
    return got


def load() -> str:
    """The 1-minute load average, for the header and footer lines."""
    return f"{os.getloadavg()[0]:.2f}"


def spread(ours: list[float], theirs: list[float]) -> tuple[float, float, float]:
    """Median of the per-pair step-time ratios theirs/ours (steps/s ratio), with its quartiles.

    Pairs are the i-th step of each contestant, which ran back to back.
    """
    ratios = sorted(t / o for o, t in zip(ours, theirs))
    q = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
    return q[1], q[0], q[2]


def print_table(rows: dict[str, tuple[list[float], list[float], int]]) -> None:
    """Median step time, steps/s, median CPU time per step and peak RSS of each contestant."""
    print(f"{'run':<10}{'median step (ms)':>18}{'steps/s':>10}{'CPU ms/step':>13}{'peak RSS (MB)':>15}")
    for name, (times, cpu, peak) in rows.items():
        med = statistics.median(times)
        cpu_text = f"{1e3 * statistics.median(cpu):>13.1f}" if cpu else f"{'-':>13}"
        peak_text = f"{peak / 1e6:>15.0f}" if peak else f"{'-':>15}"
        print(f"{name:<10}{1e3 * med:>18.1f}{1 / med:>10.2f}{cpu_text}{peak_text}")
