"""Recipes under ``torchrun --nproc_per_node 2`` (CPU, gloo) give the one-process results.

The oracle is the same recipe in one process with the same global batch: data
loaders are sharded over processes, so the two-process runs use half the
per-process batch. Only rank 0 writes files and prints the table.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from divmin.recipes import run_recipe
from divmin.recipes._plots import figure_record
from .._torchrun import torchrun


def _torchrun(name: str, out: Path, overrides: list[str]) -> str:
    sets = [x for item in overrides for x in ("--set", item)]
    return torchrun("-m", "divmin", "run", name, "--out", out, *sets)


def _numbers(x, path=""):
    """Flatten the numbers of a JSON value to {path: float} (strings and bools left out)."""
    if isinstance(x, dict):
        return {k: v for key, val in x.items() for k, v in _numbers(val, f"{path}/{key}").items()}
    if isinstance(x, list):
        return {k: v for i, val in enumerate(x) for k, v in _numbers(val, f"{path}[{i}]").items()}
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return {path: float(x)}
    return {}


def _assert_same(two: Path, one: Path, rtol: float, atol: float) -> None:
    a, b = (json.loads((d / "results.json").read_text()) for d in (two, one))
    assert (a["processes"], b["processes"]) == (2, 1)
    assert a["columns"] == b["columns"] and len(a["rows"]) == len(b["rows"]) > 0
    assert [r[a["columns"][0]] for r in a["rows"]] == [r[b["columns"][0]] for r in b["rows"]]
    na, nb = (_numbers({"rows": r["rows"], "summary": r["summary"]}) for r in (a, b))
    assert na.keys() == nb.keys()
    for key in na:
        assert math.isclose(na[key], nb[key], rel_tol=rtol, abs_tol=atol), (key, na[key], nb[key])


def _last_record(path: Path) -> dict:
    return json.loads(path.read_text().splitlines()[-1])


FIT = ["divergences=('reverse_kl', 'forward_kl', 'js')", "engine.max_steps=200", "engine.log_every=50",
       "engine.progress=False", "engine.tensorboard=False"]


@pytest.mark.slow
def test_fit_under_torchrun_matches_one_process(tmp_path):
    stdout = _torchrun("fit", tmp_path / "ddp", FIT)
    one = run_recipe("fit", tmp_path / "one", FIT)
    # rank 0 alone printed the table and wrote the files
    tables = [line for line in stdout.splitlines() if line.startswith("divergence ")]  # table headers
    assert len(tables) == 1 and stdout.count("wrote ") == 1, stdout
    assert {p.name for p in (tmp_path / "ddp").iterdir()} >= {"config.json", "results.json", "metrics.jsonl", "fit.png"}
    # every process computes the same full-grid loss, so the averaged gradients are the one-process ones
    _assert_same(tmp_path / "ddp", tmp_path / "one", rtol=1e-9, atol=1e-12)
    ddp, ref = (_last_record(d / "metrics.jsonl") for d in (tmp_path / "ddp", tmp_path / "one"))
    assert ddp.keys() == ref.keys() and all(math.isclose(ddp[k], ref[k], rel_tol=1e-9) for k in ddp)
    assert [r["divergence"] for r in one.rows] == figure_record(tmp_path / "ddp" / "fit.png")["data"]["panels"]


# response_words=(2, 2): every warm-up row has the same number of loss tokens, so the two processes'
# mean token losses average to the one-process mean; f-DPO's loss is a mean over pairs.
FDPO_LM = ["divergences=('reverse_kl',)", "sft_steps=20", "corpus_size=200", "response_words=(2, 2)",
           "train_pairs=64", "eval_pairs=16", "engine.max_steps=6", "samples_per_prompt=16",
           "engine.progress=False", "engine.tensorboard=False"]


@pytest.mark.slow
def test_fdpo_lm_under_torchrun_matches_one_process_with_the_same_global_batch(tmp_path):
    _torchrun("fdpo-lm", tmp_path / "ddp", [*FDPO_LM, "sft_batch=10", "batch_size=4"])
    run_recipe("fdpo-lm", tmp_path / "one", [*FDPO_LM, "sft_batch=20", "batch_size=8"])
    # float32 models trained on sums in another order: 1e-4 relative (the runs agree to ~1e-6)
    _assert_same(tmp_path / "ddp", tmp_path / "one", rtol=1e-4, atol=1e-6)
    for sub in ("warmup", "fdpo/reverse_kl"):
        ddp, ref = (_last_record(d / sub / "metrics.jsonl") for d in (tmp_path / "ddp", tmp_path / "one"))
        assert ddp.keys() == ref.keys()
        for key in ddp:
            assert math.isclose(ddp[key], ref[key], rel_tol=1e-4, abs_tol=1e-5), (sub, key, ddp[key], ref[key])
    # a one-process run on half the batch (what each rank sees) is not that run: both ranks counted
    ref = _last_record(tmp_path / "one" / "warmup" / "metrics.jsonl")
    run_recipe("fdpo-lm", tmp_path / "half", [*FDPO_LM, "sft_batch=10", "batch_size=4"])
    half = _last_record(tmp_path / "half" / "warmup" / "metrics.jsonl")
    assert not math.isclose(half["loss"], ref["loss"], rel_tol=1e-3)
