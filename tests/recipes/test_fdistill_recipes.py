"""The f-distill recipes run end to end with tiny settings and write complete outputs.

These are plumbing tests (a few steps); the recipes' findings are in their full runs.
"""

from __future__ import annotations

import importlib.util
import json
import math

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
    overrides = ["divergences=('reverse_kl', 'forward_kl')", "seeds=(0, 1)", "sigma_maxes=(1.0, 10.0)",
                 "fdistill.engine.max_steps=10", "fdistill.engine.eval_every=2", "score_samples=400", "hidden=16",
                 *_QUIET]
    result = run_recipe("fdistill-gmm", tmp_path, overrides)
    rows = [r for r in result.rows if r["seed"] not in ("mean", "std")]
    assert len(rows) == 8 and {r["sigma_max"] for r in result.rows} == {1.0, 10.0}
    # the table's mode metrics, recomputed by hand from the saved samples and the teacher's exact modes
    teacher = make_teacher(FDistillGMMConfig())
    samples = load_file(tmp_path / "samples.safetensors")
    assert set(samples) == {f"sigma{m}/{n}/seed{s}" for m in (1, 10) for n in ("reverse_kl", "forward_kl") for s in (0, 1)}
    for r in rows:
        x = samples[f"sigma{r['sigma_max']:g}/{r['divergence']}/seed{r['seed']}"]
        assert x.shape == (400, 2)
        want = _mode_stats_by_hand(x.double().numpy(), teacher.means.double().numpy(),
                                   teacher.weights.double().numpy(), 0.2)
        assert {k: r[k] for k in want} == pytest.approx(want, abs=1e-9), r
        gen = torch.Generator().manual_seed(10_000 + r["seed"])
        real = teacher.sample(400, generator=gen)
        pr = precision_recall(x, real, k=5)
        assert (r["precision"], r["recall"]) == pytest.approx((pr.precision, pr.recall))
        assert r["SW"] == pytest.approx(float(sliced_wasserstein(x, real, num_projections=256, generator=gen)))
    for r in rows:  # the converged column, recomputed from the run's logged evaluations
        evals = [json.loads(line) for line in (tmp_path / f"sigma{r['sigma_max']:g}/{r['divergence']}-seed{r['seed']}"
                                                / "metrics.jsonl").read_text().splitlines()]
        last = [e for e in evals if "eval/quality" in e and e["step"] >= 7.5]  # steps 8 and 10 of 10
        assert [e["step"] for e in last] == [8, 10]
        span = max(abs(last[0][k] - last[1][k]) for k in ("eval/quality", "eval/tv_weights"))
        assert r["drift"] == pytest.approx(span)
        assert r["converged"] == (span <= 0.05)
    assert result.summary["converged"] == f"{sum(r['converged'] for r in rows)}/8"
    for smax in (1.0, 10.0):
        claims = result.summary[f"sigma_max={smax:g}"]
        stat = {(r["divergence"], r["seed"]): r for r in result.rows if r["sigma_max"] == smax and r["seed"] in ("mean", "std")}
        for name in ("reverse_kl", "forward_kl"):
            mine = [r for r in rows if r["divergence"] == name and r["sigma_max"] == smax]
            assert stat[name, "mean"]["SW"] == pytest.approx(np.mean([r["SW"] for r in mine]))
            assert stat[name, "std"]["SW"] == pytest.approx(np.std([r["SW"] for r in mine], ddof=1))
            assert stat[name, "mean"]["modes covered"] == pytest.approx(np.mean([r["modes covered"] for r in mine]))
            assert claims["mean_modes_covered"][name] == stat[name, "mean"]["modes covered"]
            assert stat[name, "mean"]["converged"] == f"{sum(r['converged'] for r in mine)}/2"
        by_seed = {s: {r["divergence"]: r["modes covered"] for r in rows if r["sigma_max"] == smax and r["seed"] == s}
                   for s in (0, 1)}
        assert claims["seeds_forward_kl_covers_more"] == sum(d["forward_kl"] > d["reverse_kl"] for d in by_seed.values())
        assert claims["forward_kl_covers_more_modes"] == (stat["forward_kl", "mean"]["modes covered"]
                                                         > stat["reverse_kl", "mean"]["modes covered"])
        assert claims["best_tv"] == min(("reverse_kl", "forward_kl"), key=lambda n: stat[n, "mean"]["TV weights"])
        tv = {(r["divergence"], r["seed"]): r["TV weights"] for r in rows if r["sigma_max"] == smax}
        ahead = claims["ahead_of_reverse_kl"]["forward_kl"]
        assert ahead["tv_margin"] == pytest.approx(stat["reverse_kl", "mean"]["TV weights"]
                                                   - stat["forward_kl", "mean"]["TV weights"])
        assert ahead["seeds_lower_tv"] == sum(tv["forward_kl", s] < tv["reverse_kl", s] for s in (0, 1))
        assert claims["claim"] == "untested"  # JS is not in this run
    for name in ("config.json", "results.json", "fdistill_gmm.png", "sigma10/forward_kl-seed1/metrics.jsonl"):
        assert (tmp_path / name).stat().st_size > 0, name
    figure = check_figure(tmp_path / "fdistill_gmm.png")
    assert figure["data"]["panels"] == ["teacher"] + [
        f"{r['divergence']}, sigma_max {r['sigma_max']:g} (seed 0): {r['modes covered']}/8" for r in rows if r["seed"] == 0]
    # the seed spread: every seed's value per member and setting, as in the table
    for smax in (1.0, 10.0):
        for metric in ("TV weights", "modes covered"):
            got = figure["data"]["spread"][f"sigma_max {smax:g}"][metric]
            assert list(got) == ["reverse_kl", "forward_kl"]
            for name, values in got.items():
                assert values == pytest.approx([r[metric] for r in rows if (r["sigma_max"], r["divergence"]) == (smax, name)])
    assert "mean +- sd over seeds" in figure["legend"] and "one seed" in figure["legend"]
    assert "reverse_kl" in format_table(result)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert len(saved["rows"]) == 16


def test_convergence_reads_the_last_quarter_of_the_evaluations():
    from divmin.recipes.fdistill_gmm import convergence

    def ev(step, modes, q, tv):
        return {"step": step, "eval/modes_covered": modes, "eval/quality": q, "eval/tv_weights": tv}

    early = [ev(100, 3, 0.1, 0.9), ev(500, 5, 0.5, 0.5)]  # before 3/4 of 1000 steps: ignored
    still = early + [ev(750, 8, 0.90, 0.10), ev(1000, 8, 0.93, 0.12)]
    moving = early + [ev(750, 8, 0.80, 0.10), ev(1000, 8, 0.93, 0.12)]
    assert convergence(still, 1000, 0.05) == (True, pytest.approx(0.03))
    assert convergence(moving, 1000, 0.05) == (False, pytest.approx(0.13))
    assert convergence(early + [ev(750, 8, 0.90, 0.10), ev(875, 7, 0.9, 0.2), ev(1000, 8, 0.90, 0.10)],
                       1000, 0.05) == (False, pytest.approx(0.1))  # the middle one counts too
    converged, drift = convergence(early + [ev(1000, 8, 0.9, 0.1)], 1000, 0.05)  # one evaluation: cannot tell
    assert converged is False and math.isnan(drift)


def test_seed_spread_of_an_undefined_drift_is_nan_not_a_crash():
    from divmin.recipes._seeds import seed_sd  # the std rows of fdistill-gmm (and kd-cache's ppl sd)

    assert math.isnan(seed_sd([math.nan, math.nan])) and math.isnan(seed_sd([0.1, math.nan]))
    assert math.isnan(seed_sd([0.1, math.inf]))
    assert seed_sd([0.1, 0.3]) == pytest.approx(math.sqrt(0.02)) and seed_sd([0.4]) == 0.0


def _claim_of(tv: dict[str, list[float]]) -> dict:
    from divmin.recipes.fdistill_gmm import _claims

    runs = [{"divergence": n, "seed": s, "TV weights": v, "modes covered": 8, "SW": 0.0}
            for n, vs in tv.items() for s, v in enumerate(vs)]
    means = [{"divergence": n, "TV weights": float(np.mean(vs)), "modes covered": 8, "SW": 0.0} for n, vs in tv.items()]
    return _claims(means, runs, 8)


def test_the_paper_ordering_is_read_seed_by_seed():
    # both members below reverse KL's TV on every seed: holds, with the margins of the means
    c = _claim_of({"reverse_kl": [0.3, 0.2, 0.25], "forward_kl": [0.2, 0.1, 0.2], "js": [0.1, 0.15, 0.2]})
    assert c["claim"] == "holds" and c["seeds"] == 3
    assert c["ahead_of_reverse_kl"]["forward_kl"]["tv_margin"] == pytest.approx(0.25 - 0.5 / 3)
    assert c["ahead_of_reverse_kl"]["js"]["seeds_lower_tv"] == 3
    # JS loses one seed but keeps the lower mean: partly
    c = _claim_of({"reverse_kl": [0.3, 0.2, 0.25], "forward_kl": [0.2, 0.1, 0.2], "js": [0.1, 0.25, 0.2]})
    assert c["claim"] == "partly" and c["ahead_of_reverse_kl"]["js"]["seeds_lower_tv"] == 2
    # a tie on a seed does not count as a win
    c = _claim_of({"reverse_kl": [0.3, 0.2], "forward_kl": [0.2, 0.2], "js": [0.1, 0.1]})
    assert c["claim"] == "partly" and c["ahead_of_reverse_kl"]["forward_kl"]["seeds_lower_tv"] == 1
    # reverse KL lowest: not
    c = _claim_of({"reverse_kl": [0.1, 0.1], "forward_kl": [0.2, 0.1], "js": [0.3, 0.05]})
    assert c["claim"] == "not" and c["ahead_of_reverse_kl"]["js"]["tv_margin"] == pytest.approx(-0.075)


@pytest.mark.parametrize("bad", [dict(sigma_maxes=()), dict(sigma_maxes=(1.0, 1.0)), dict(seeds=(0, 0))])
def test_fdistill_gmm_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        FDistillGMMConfig(**bad)


def test_fdistill_gmm_noise_range_is_set_per_setting():
    import dataclasses

    cfg = FDistillGMMConfig().fdistill
    with pytest.raises(ValueError, match="from `sigma_maxes`"):
        FDistillGMMConfig(fdistill=dataclasses.replace(cfg, sigma_max=5.0))
    with pytest.raises(ValueError, match="from `divergences`"):  # also set per run
        FDistillGMMConfig(fdistill=dataclasses.replace(cfg, divergence="js"))


@pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="digits ship with scikit-learn")
def test_fdistill_images_outputs(tmp_path):
    overrides = ["divergences=('reverse_kl', 'js')", "student_seeds=(0, 1)", "teacher.engine.max_steps=60",
                 "classifier_steps=150", "width=64", "fdistill.engine.max_steps=4", "fdistill.critic_warmup=2",
                 "score_samples=200", "sampler_steps=6", *_QUIET]
    result = run_recipe("fdistill-images", tmp_path, overrides)
    by = {(r["sampler"], r["seed"]): r for r in result.rows}
    assert set(by) == {("training data", 0), ("teacher (EDM Heun)", 0), ("teacher, one step", 0),
                       *((f"student {n}", s) for n in ("reverse_kl", "js") for s in (0, 1, "mean", "std"))}
    assert by["teacher (EDM Heun)", 0]["NFE"] == 11 and by["student reverse_kl", 0]["NFE"] == 1
    for n in ("reverse_kl", "js"):  # mean and sample sd over the student seeds
        fd = [by[f"student {n}", s]["FD"] for s in (0, 1)]
        assert by[f"student {n}", "mean"]["FD"] == pytest.approx(np.mean(fd))
        assert by[f"student {n}", "std"]["FD"] == pytest.approx(np.std(fd, ddof=1))
    for name in ("student-js-seed1/metrics.jsonl", "student-reverse_kl-seed0/metrics.jsonl"):
        assert (tmp_path / name).stat().st_size > 0, name
    # the classifier's features separate real digits from undertrained samples
    assert by["training data", 0]["FD"] < min(r["FD"] for k, r in by.items() if k[0] != "training data" and k[1] != "std")
    assert result.summary["classifier_test_accuracy"] > 0.8
    fd = {n: [by[f"student {n}", s]["FD"] for s in (0, 1)] for n in ("reverse_kl", "js")}
    js = result.summary["ahead_of_reverse_kl"]["js"]
    assert js["fd_margin"] == pytest.approx(np.mean(fd["reverse_kl"]) - np.mean(fd["js"]))
    assert js["seeds_lower_fd"] == sum(a < b for a, b in zip(fd["js"], fd["reverse_kl"]))
    assert result.summary["claim"] == "untested"  # forward KL is not in this run
    figure = check_figure(tmp_path / "fdistill_images.png")
    bars = {k.rsplit(" (", 1)[0]: v for k, v in figure["data"]["bars"].items()}
    assert bars == pytest.approx({k[0]: r["FD"] for k, r in by.items()
                                  if k[0] != "training data" and (k[1] == "mean" or not k[0].startswith("student"))})
    errors = {k.rsplit(" (", 1)[0]: v for k, v in figure["data"]["errors"].items()}
    assert errors["student js"] == pytest.approx(by["student js", "std"]["FD"])
    seeds = {k.rsplit(" (", 1)[0]: v for k, v in figure["data"]["seeds"].items()}
    assert list(seeds) == ["student reverse_kl", "student js"]
    for n, values in fd.items():
        assert seeds[f"student {n}"] == pytest.approx(values)
    assert "one student seed" in figure["legend"]
    assert figure["data"]["references"]["training data"] == pytest.approx(by["training data", 0]["FD"])


def test_image_grid_separates_the_digits_with_blank_gaps():
    import torch

    from divmin.recipes.fdistill_images import _tile

    x = torch.arange(64, dtype=torch.float32).reshape(64, 1, 1, 1).expand(64, 1, 8, 8) / 64  # digit i = i/64
    grid = _tile(x, gap=2)
    assert grid.shape == (78, 78)
    assert torch.equal(grid[8:10], torch.full((2, 78), -1.0)) and torch.equal(grid[:, 8:10], torch.full((78, 2), -1.0))
    assert torch.equal(grid[10:18, 20:28], torch.full((8, 8), 10 / 64))  # row 1, column 2: digit 10
