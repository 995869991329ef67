"""Options that do not go together are refused when the config is built, naming both fields."""

from __future__ import annotations

import re

import pytest

from divmin.align import FDPGConfig, FDPOConfig
from divmin.diffusion import DenoiserTrainingConfig, FDistillConfig
from divmin.distill import DistillConfig
from divmin.engine import EngineConfig

# (config class, refused combination, the two fields its message names, an accepted neighbour)
RULES = [
    (DistillConfig, dict(sinkd_weight=0.1, fused=True), ("sinkd_weight", "fused"), dict(sinkd_weight=0.1)),
    (DistillConfig, dict(fused_backend="torch", fused=False), ("fused_backend", "fused"), dict(fused_backend="torch")),
    (DistillConfig, dict(sinkd_mode="log"), ("sinkd_mode", "sinkd_weight"), dict(sinkd_mode="log", sinkd_weight=0.1)),
    (DistillConfig, dict(sinkd_iters=5), ("sinkd_iters", "sinkd_weight"), dict(sinkd_iters=5, sinkd_weight=0.1)),
    (DistillConfig, dict(task="sequence_classification", lmbda=0.5), ("lmbda", "task"), dict(lmbda=0.5)),
    (DistillConfig, dict(task="sequence_classification", seq_kd=True), ("seq_kd", "task"), dict(seq_kd=True)),
    (DistillConfig, dict(task="sequence_classification", fused=True), ("fused", "task"), dict(fused=True)),
    (DistillConfig, dict(task="sequence_classification", max_new_tokens=8), ("max_new_tokens", "task"),
     dict(task="sequence_classification", sinkd_weight=0.1, temperature=2.0)),
    (FDPGConfig, dict(proposal_update_every=3), ("proposal_update_every", "mode"),
     dict(mode="offline", proposal_update_every=3)),
    (FDistillConfig, dict(ratio_ema=0.0, time_bins=4), ("time_bins", "ratio_ema"), dict(ratio_ema=0.0)),
    (FDistillConfig, dict(disc_weight=0.0, gan_weight=1e-3), ("gan_weight", "disc_weight"),
     dict(disc_weight=0.0, gan_weight=0.0)),
    (FDistillConfig, dict(sigma_min=1.0, sigma_max=1.0), ("sigma_min", "sigma_max"), dict(sigma_min=0.5, sigma_max=1.0)),
    (DenoiserTrainingConfig, dict(sigma_min=2.0, sigma_max=1.0), ("sigma_min", "sigma_max"), dict(sigma_max=1.0)),
    (FDPOConfig, dict(max_length=64, max_prompt_length=64), ("max_prompt_length", "max_length"),
     dict(max_length=64, max_prompt_length=63)),
]
# (EngineConfig's "checkpoint_every needs out_dir" is refused by the Trainer, not at construction: a recipe
# fills out_dir in from --out; tests/engine/test_engine_basics.py::test_checkpoints_need_out_dir)


@pytest.mark.parametrize("cls,bad,fields,good", RULES, ids=[f"{r[0].__name__}:{'+'.join(r[1])}" for r in RULES])
def test_incompatible_options_are_refused_at_construction(cls, bad, fields, good):
    with pytest.raises(ValueError) as info:
        cls(**bad)
    message = str(info.value)
    for field in fields:
        assert re.search(rf"`{field}`|\b{field}=", message), (field, message)
    cls(**good)
