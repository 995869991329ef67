"""An endless, resumable stream of batches over a task's data source.

Position is (epoch, batch index within epoch). For a ``DataLoader`` the order
is made a function of (seed, epoch) by Accelerate's seedable sampler, and a
resume skips the consumed batches with ``skip_first_batches`` (indices only:
skipped samples are never loaded). Other iterables are re-iterated each epoch
and fast-forwarded on resume.

Exactness caveat: randomness drawn from the *global* RNGs inside a dataset's
``__getitem__`` is not replayed exactly (the loader prefetches one batch
ahead); derive such randomness from the sample index or draw it in
``train_step`` from ``ctx.generator``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import send_to_device
from torch.utils.data import DataLoader


class BatchStream:
    """``next()`` forever over ``source``; ``state()``/``load_state()`` for resume."""

    def __init__(self, source: Iterable, accelerator: Accelerator) -> None:
        self._acc = accelerator
        self._is_loader = isinstance(source, DataLoader)
        self._source = accelerator.prepare(source) if self._is_loader else source
        self._one_shot = not self._is_loader and iter(source) is source
        self.epoch = 0
        self.batch = 0  # batches consumed in the current epoch
        self._skip = 0  # batches to skip when the next iterator is opened
        self._it: Iterator | None = None

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state(self, state: dict[str, int]) -> None:
        """Position the stream; the iterator is (re)opened lazily at the next ``next()``."""
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
        self._skip = self.batch
        self._it = None
        if not self._is_loader:
            # Fast-forward now, i.e. before the caller restores the RNG states,
            # so that draws made while skipping cannot shift the resumed stream.
            self._open()

    def next(self) -> Any:
        for _ in range(2):  # at most one epoch rollover per call
            if self._it is None:
                self._open()
            try:
                batch = next(self._it)
            except StopIteration:
                if self._one_shot:
                    raise RuntimeError("batches(ctx) returned an iterator that is exhausted") from None
                if self.batch == 0:
                    raise RuntimeError("batches(ctx) yielded no batch in a whole epoch") from None
                self.epoch, self.batch, self._it = self.epoch + 1, 0, None
                continue
            self.batch += 1
            return batch if self._is_loader else send_to_device(batch, self._acc.device)
        raise AssertionError("unreachable")

    def _open(self) -> None:
        skip, self._skip = self._skip, 0
        if self._is_loader:
            self._it = self._open_loader(skip)
            return
        if self._one_shot:
            # A one-shot iterator cannot restart: skip everything consumed so far.
            it = self._source
        else:
            it = iter(self._source)
        for _ in range(skip):
            next(it)
        self._it = it

    def _open_loader(self, skip: int) -> Iterator:
        from accelerate import skip_first_batches

        loader = self._source
        loader.set_epoch(self.epoch)  # sampler seed = data_seed + epoch
        if skip:
            loader = skip_first_batches(loader, skip)
            loader.set_epoch(self.epoch)
        it = iter(loader)
        # Opening a DataLoader iterator draws a worker base seed from the global
        # torch RNG (on the first next(), Accelerate's iterator is lazy). That
        # draw would happen at a different point after a resume, so isolate it:
        # fetch the first batch with the global CPU RNG state forked.
        with torch.random.fork_rng(devices=[]):
            first = next(it, _END)
        return _chain_first(first, it)


_END = object()


def _chain_first(first: Any, it: Iterator) -> Iterator:
    if first is _END:
        return
    yield first
    yield from it
