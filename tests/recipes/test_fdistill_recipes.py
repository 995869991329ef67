"""The f-distill recipes run end to end with tiny settings and write complete outputs.

These are plumbing tests (a few steps); the recipes' findings are in their full runs.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from divmin.eval import precision_recall, sliced_wasserstein
from divmin.recipes import format_table, run_recipe
from divmin.recipes.fdistill_gmm import FDistillGMMConfig, make_teacher

from ._figures import check_figure

_QUIET = ["fdistill.engine.progress=False"]


def _mode_stats_by_hand(x: np.ndarray, means: np.ndarray, weights: np.ndarray, std: float) -> dict:
    """Nearest mode within 3 std, shares of the assigned samples, modes with share >= 0.25 x weight."""
    dist = np.linalg.norm(x[:, None, :] - means[None], axis=-1)
    near, assigned = dist.argmin(1), dist.min(1) <= 3.0 * std
    share = np.bincount(near[assigned], minlength=len(means)) / assigned.sum()
    w = weights / weights.sum()
    return {"modes covered": int((share >= 0.25 * w).sum()), "TV weights": 0.5 * np.abs(share - w).sum(),
            "quality": assigned.mean(), "lightest share": share[-1]}


def test_fdistill_gmm_outputs(tmp_path):
    overrides = ["divergences=('reverse_kl', 'js')", "seeds=(0, 1)", "fdistill.engine.max_steps=10",
                 "fdistill.engine.eval_every=10", "eval_samples=400", "hidden=16", *_QUIET]
    result = run_recipe("fdistill-gmm", tmp_path, overrides)
    rows = [r for r in result.rows if r["seed"] != "mean"]
    means = {r["divergence"]: r for r in result.rows if r["seed"] == "mean"}
    assert len(rows) == 4 and set(means) == {"reverse_kl", "js"}
    # the table's mode metrics, recomputed by hand from the saved samples and the teacher's exact modes
    teacher = make_teacher(FDistillGMMConfig())
    samples = load_file(tmp_path / "samples.safetensors")
    assert set(samples) == {f"{n}/seed{s}" for n in ("reverse_kl", "js") for s in (0, 1)}
    for r in rows:
        x = samples[f"{r['divergence']}/seed{r['seed']}"]
        assert x.shape == (400, 2)
        want = _mode_stats_by_hand(x.double().numpy(), teacher.means.double().numpy(),
                                   teacher.weights.double().numpy(), 0.2)
        assert {k: r[k] for k in want} == pytest.approx(want, abs=1e-9), r
        gen = torch.Generator().manual_seed(10_000 + r["seed"])
        real = teacher.sample(400, generator=gen)
        pr = precision_recall(x, real, k=5)
        assert (r["precision"], r["recall"]) == pytest.approx((pr.precision, pr.recall))
        assert r["SW"] == pytest.approx(float(sliced_wasserstein(x, real, num_projections=256, generator=gen)))
    for name, m in means.items():
        mine = [r for r in rows if r["divergence"] == name]
        assert m["SW"] == pytest.approx(sum(r["SW"] for r in mine) / 2)
        assert m["modes covered"] == pytest.approx(sum(r["modes covered"] for r in mine) / 2)
        assert result.summary["mean_modes_covered"][name] == m["modes covered"]
    assert result.summary["best_tv"] == min(means, key=lambda n: means[n]["TV weights"])
    assert result.summary["best_sw"] == min(means, key=lambda n: means[n]["SW"])
    for name in ("config.json", "results.json", "fdistill_gmm.png", "js-seed1/metrics.jsonl"):
        assert (tmp_path / name).stat().st_size > 0, name
    figure = check_figure(tmp_path / "fdistill_gmm.png")
    assert figure["data"]["panels"] == ["teacher"] + [
        f"{r['divergence']} (seed 0): {r['modes covered']}/8 modes" for r in rows if r["seed"] == 0]
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


def test_image_grid_separates_the_digits_with_blank_gaps():
    import torch

    from divmin.recipes.fdistill_images import _tile

    x = torch.arange(64, dtype=torch.float32).reshape(64, 1, 1, 1).expand(64, 1, 8, 8) / 64  # digit i = i/64
    grid = _tile(x, gap=2)
    assert grid.shape == (78, 78)
    assert torch.equal(grid[8:10], torch.full((2, 78), -1.0)) and torch.equal(grid[:, 8:10], torch.full((78, 2), -1.0))
    assert torch.equal(grid[10:18, 20:28], torch.full((8, 8), 10 / 64))  # row 1, column 2: digit 10
