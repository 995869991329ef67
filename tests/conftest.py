"""Suite-wide setup that must happen before any test module is imported."""

import os

import torch

# Triton decides at decoration time whether @triton.jit functions (its own standard
# library included) run in its CPU interpreter, so the switch is set before anything
# imports triton. Without CUDA the Triton divergence kernel is then tested in the
# interpreter (tests/divergences/test_triton.py, tests/distill/test_fused_triton.py);
# with CUDA it runs compiled.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
