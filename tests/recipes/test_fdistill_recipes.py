"""The f-distill recipes run end to end with tiny settings and write complete outputs.

These are plumbing tests (a few steps); the recipes' findings are in their full runs.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

from divmin.recipes import format_table, run_recipe

from ._figures import check_figure

_QUIET = ["fdistill.engine.progress=False"]


def test_fdistill_gmm_outputs(tmp_path):
    overrides = ["divergences=('reverse_kl', 'js')", "seeds=(0, 1)", "fdistill.engine.max_steps=10",
                 "fdistill.engine.eval_every=10", "eval_samples=400", "hidden=16", *_QUIET]
    result = run_recipe("fdistill-gmm", tmp_path, overrides)
    rows = [r for r in result.rows if r["seed"] != "mean"]
    means = {r["divergence"]: r for r in result.rows if r["seed"] == "mean"}
    assert len(rows) == 4 and set(means) == {"reverse_kl", "js"}
    for r in rows:
        assert 0 <= r["modes covered"] <= 8 and 0 <= r["TV weights"] <= 1
        assert 0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1 and r["SW"] > 0
    js = [r["SW"] for r in rows if r["divergence"] == "js"]
    assert means["js"]["SW"] == pytest.approx(sum(js) / 2)
    assert result.summary["mean_modes_covered"]["js"] == means["js"]["modes covered"]
    assert result.summary["best_tv"] in ("reverse_kl", "js")
    for name in ("config.json", "results.json", "fdistill_gmm.png", "js-seed1/metrics.jsonl"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert "reverse_kl" in format_table(result)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert len(saved["rows"]) == 6


@pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="digits ship with scikit-learn")
def test_fdistill_images_outputs(tmp_path):
    overrides = ["divergences=('reverse_kl',)", "teacher_steps=60", "classifier_steps=150", "width=64",
                 "fdistill.engine.max_steps=4", "eval_samples=200", "sampler_steps=6", *_QUIET]
    result = run_recipe("fdistill-images", tmp_path, overrides)
    by = {r["sampler"]: r for r in result.rows}
    assert set(by) == {"training data", "teacher (EDM Heun)", "teacher, one step", "student reverse_kl"}
    assert by["teacher (EDM Heun)"]["NFE"] == 11 and by["student reverse_kl"]["NFE"] == 1
    # the classifier's features separate real digits from undertrained samples
    assert by["training data"]["FD"] < min(r["FD"] for k, r in by.items() if k != "training data")
    assert result.summary["classifier_test_accuracy"] > 0.8
    figure = check_figure(tmp_path / "fdistill_images.png")
    fd = {k.rsplit(" (", 1)[0]: v for k, v in figure["data"]["bars"].items()}
    assert fd == pytest.approx({k: r["FD"] for k, r in by.items() if k != "training data"})
    assert figure["data"]["references"]["training data"] == pytest.approx(by["training data"]["FD"])
