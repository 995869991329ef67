"""How the torchrun workers of the test suite run their ``main``."""

from __future__ import annotations

import os
import sys
import traceback
from typing import Callable

import torch.distributed as dist


def run_worker(main: Callable[[], None]) -> None:
    """Run ``main``, tear the gloo group down together, and leave without interpreter teardown.

    Left to interpreter shutdown, gloo's threads can abort the process ("terminate called without
    an active exception", SIGABRT) under load, after the work has finished and been printed; so the
    ranks meet at a barrier, destroy the group, flush and ``os._exit`` with the worker's status.
    """
    code = 0
    try:
        main()
    except BaseException:  # noqa: BLE001 - reported, then the exit status says it
        traceback.print_exc()
        code = 1
    finally:
        if dist.is_initialized():
            if code == 0:
                dist.barrier()  # both ranks done before either tears the group down
            dist.destroy_process_group()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
