"""How the torchrun workers of the test suite run their ``main``."""

from __future__ import annotations

from typing import Callable

import torch.distributed as dist


def run_worker(main: Callable[[], None]) -> None:
    """Run ``main``, then tear the gloo group down: left to interpreter shutdown it can abort (SIGABRT) under load."""
    try:
        main()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
