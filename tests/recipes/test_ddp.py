"""Every recipe under ``torchrun --nproc_per_node 2`` (CPU, gloo), as the README promises.

Each recipe runs at a tiny size (the settings of the resume test): the job exits 0, rank 0 alone prints the
table and writes ``results.json`` (recording 2 processes), and every number of the table is finite. Where the
math makes the two-process run the one-process run, the oracle is the same recipe in one process with the same
global batch: ``fit`` (every process computes the same full-grid loss), ``fdpo-lm`` (data loaders are sharded
over processes, so the two-process run uses half the per-process batch) and ``fdpo-bandit`` (one batch of pairs
per step, split over the processes, its gradient and Fisher summed over them).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from divmin.recipes import available_recipes, run_recipe
from divmin.recipes._plots import figure_record
from .._torchrun import torchrun
from .test_resume_every_recipe import CASES as TINY


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
FDPO_LM = ["divergences=('reverse_kl',)", "warmup.steps=20", "warmup.corpus_size=200", "warmup.response_words=(2, 2)",
           "train_pairs=64", "eval_pairs=16", "fdpo.engine.max_steps=6", "samples_per_prompt=16",
           "fdpo.engine.progress=False", "fdpo.engine.tensorboard=False"]


@pytest.mark.slow
def test_fdpo_lm_under_torchrun_matches_one_process_with_the_same_global_batch(tmp_path):
    _torchrun("fdpo-lm", tmp_path / "ddp", [*FDPO_LM, "warmup.batch=10", "fdpo.batch_size=4"])
    run_recipe("fdpo-lm", tmp_path / "one", [*FDPO_LM, "warmup.batch=20", "fdpo.batch_size=8"])
    # float32 models trained on sums in another order: 1e-4 relative (the runs agree to ~1e-6)
    _assert_same(tmp_path / "ddp", tmp_path / "one", rtol=1e-4, atol=1e-6)
    for sub in ("warmup", "fdpo/reverse_kl"):
        ddp, ref = (_last_record(d / sub / "metrics.jsonl") for d in (tmp_path / "ddp", tmp_path / "one"))
        assert ddp.keys() == ref.keys()
        for key in ddp:
            assert math.isclose(ddp[key], ref[key], rel_tol=1e-4, abs_tol=1e-5), (sub, key, ddp[key], ref[key])
    # a one-process run on half the batch (what each rank sees) is not that run: both ranks counted
    ref = _last_record(tmp_path / "one" / "warmup" / "metrics.jsonl")
    run_recipe("fdpo-lm", tmp_path / "half", [*FDPO_LM, "warmup.batch=10", "fdpo.batch_size=4"])
    half = _last_record(tmp_path / "half" / "warmup" / "metrics.jsonl")
    assert not math.isclose(half["loss"], ref["loss"], rel_tol=1e-3)


# --------------------------------------------------------------------------- fdpo-bandit
BANDIT = ["responses=8", "divergences=('reverse_kl', 'js')", "betas=(0.1, 1.0)", "engine.max_steps=12",
          "batch_pairs=64", "engine.log_every=4", "engine.progress=False", "engine.tensorboard=False"]


def _assert_bandit_is_the_one_process_run(tmp_path: Path, overrides: list[str]) -> None:
    _torchrun("fdpo-bandit", tmp_path / "ddp", overrides)
    one = run_recipe("fdpo-bandit", tmp_path / "one", overrides)
    # the same pairs, the same steps: float64 policies agree to rounding (measured ~2e-13)
    _assert_same(tmp_path / "ddp", tmp_path / "one", rtol=1e-9, atol=1e-12)
    assert all(r["KL(pi||ref)"] > 1e-3 for r in one.rows)  # the policies moved: the agreement is not vacuous
    ddp, ref = ([json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
                for d in (tmp_path / "ddp", tmp_path / "one"))
    assert [r["step"] for r in ddp] == [r["step"] for r in ref] and ddp[-1].keys() == ref[-1].keys()
    for a, b in zip(ddp, ref):
        assert a["pairs"] == b["pairs"]  # the whole batch, counted once
        for key in a:  # each process's loss share is logged in float32
            assert math.isclose(a[key], b[key], rel_tol=1e-6, abs_tol=1e-9), (a["step"], key, a[key], b[key])


def test_fdpo_bandit_under_torchrun_is_the_one_process_run(tmp_path):
    """Process 0 draws the step's pairs, each process takes every other one; the natural-gradient Fisher and the
    gradient are summed over processes, so both processes take the one-process step (they used to build F from
    their own pairs and crash at step 1: ``DDP replicas of model(s) ['policies'] differ``)."""
    _assert_bandit_is_the_one_process_run(tmp_path, BANDIT)


@pytest.mark.slow
@pytest.mark.parametrize("extra", [
    # Adam, and micro-batches: the Fisher and the gradient are both averaged over the micro-batches
    ["optimizer=adam", "lr=0.2", "engine.grad_accum_steps=2"],
    ["engine.grad_accum_steps=2"],
    # at most 2 pairs a step, often none on process 1: a process without pairs still joins the step
    ["batch_pairs=2", "divergences=('forward_kl',)"],
], ids=["adam-accumulation", "natural-accumulation", "process-without-pairs"])
def test_fdpo_bandit_under_torchrun_is_the_one_process_run_in_every_mode(tmp_path, extra):
    _assert_bandit_is_the_one_process_run(tmp_path, [*BANDIT, *extra])


# --------------------------------------------------------------------------- every recipe
# Recipes compared with one process above; the rest run at the resume test's tiny sizes, with these changes:
DEDICATED = {"fdpo-bandit"}
CHANGES = {
    # an evaluation every step, so the last quarter holds the two evaluations the `drift` column needs
    "fdistill-gmm": ["fdistill.engine.eval_every=1"],
}
SLOW = {"depict", "weat", "fdpg-lm", "didi-synthetic"}  # the heaviest (measured CPU time)


def _undefined(name: str, saved: dict) -> set[str]:
    """Table entries that are NaN by their column's definition at this size (anything else must be finite)."""
    if name == "speech-egg":  # the timing spread of identified cycles: undefined when none was identified
        return {f"/rows[{i}]/ida_ms" for i, r in enumerate(saved["rows"]) if r["idr"] == 0}
    return set()


def test_every_recipe_is_run_under_torchrun():
    assert set(available_recipes()) == set(TINY) and DEDICATED | set(CHANGES) | SLOW <= set(TINY)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
                                  for n in sorted(set(TINY) - DEDICATED)])
def test_recipe_under_torchrun(name, tmp_path):
    out = tmp_path / "out"
    stdout = _torchrun(name, out, [*TINY[name][0], *CHANGES.get(name, [])])  # asserts exit 0
    assert stdout.count("wrote ") == 1, stdout[-3000:]  # rank 0 alone printed the table and wrote the files
    saved = json.loads((out / "results.json").read_text())
    assert saved["recipe"] == name and saved["processes"] == 2 and saved["rows"]
    assert (out / "config.json").is_file() and list(out.glob("**/metrics.jsonl"))
    numbers = _numbers({"rows": saved["rows"], "summary": saved["summary"]})
    assert any(k.startswith("/rows") for k in numbers)
    assert {k for k, v in numbers.items() if not math.isfinite(v)} == _undefined(name, saved), saved
