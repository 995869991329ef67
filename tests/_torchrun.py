"""Launch a script (or ``-m module``) under ``torchrun --standalone --nproc_per_node 2`` on CPU (gloo)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import divmin

SRC = str(Path(divmin.__file__).resolve().parents[1])


def torchrun(*args: str, timeout: int = 300) -> str:
    """Run ``args`` (a worker script and its arguments, or ``-m``, a module and its arguments) in two CPU
    processes, one thread each; assert that the job succeeded and return its stdout."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout
