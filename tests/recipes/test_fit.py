"""The `fit` recipe reproduces the textbook picture; its outputs are complete."""

from __future__ import annotations

import json

import pytest

from divmin.recipes import run_recipe

from ._figures import check_figure


@pytest.fixture(scope="module")
def fit_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fit")
    overrides = ["divergences=('reverse_kl', 'forward_kl', 'js')", "engine.max_steps=800",
                 "engine.progress=False", "engine.tensorboard=False"]
    return out, run_recipe("fit", out, overrides)


def test_reverse_kl_locks_onto_one_mode_and_forward_kl_covers_all(fit_run):
    _, result = fit_run
    modes = {r["divergence"]: r["modes covered"] for r in result.rows}
    assert modes["reverse_kl"] == 1
    assert modes["forward_kl"] == 3
    assert result.summary["claim_holds"] is True


def test_each_fit_is_best_at_its_own_divergence(fit_run):
    """Minimising D should give the lowest D among the fits (a check on the optimiser, not a tautology)."""
    _, result = fit_run
    rows = {r["divergence"]: r for r in result.rows}
    assert rows["forward_kl"]["KL(P||Q)"] <= min(r["KL(P||Q)"] for r in rows.values()) + 1e-6
    assert rows["reverse_kl"]["KL(Q||P)"] <= min(r["KL(Q||P)"] for r in rows.values()) + 1e-6
    assert rows["js"]["JS"] <= min(r["JS"] for r in rows.values()) + 1e-6


def test_forward_kl_fit_matches_the_moments_of_the_target(fit_run):
    """The forward-KL optimum over Gaussians is moment matching: a closed-form oracle."""
    _, result = fit_run
    w, m, s = (0.6, 0.3, 0.1), (-4.0, 0.5, 5.0), (0.6, 0.6, 0.6)
    mean = sum(wi * mi for wi, mi in zip(w, m))
    var = sum(wi * (si**2 + mi**2) for wi, mi, si in zip(w, m, s)) - mean**2
    row = next(r for r in result.rows if r["divergence"] == "forward_kl")
    assert abs(float(row["mean"]) - mean) < 0.02
    assert abs(float(row["std"]) - var**0.5) < 0.02


def test_outputs_are_written(fit_run):
    out, result = fit_run
    for name in ("config.json", "metrics.jsonl", "results.json", "fit.png"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "results.json").read_text())
    assert saved["columns"] == result.columns and len(saved["rows"]) == 3 and "start" in saved["columns"]
    assert json.loads((out / "config.json").read_text())["config"]["engine"]["max_steps"] == 800
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 800 and "D/reverse_kl" in records[-1]
    figure = check_figure(out / "fit.png")
    assert figure["data"]["panels"] == [r["divergence"] for r in result.rows]
    assert set(figure["legend"]) == {"target P", "fit Q"}


def test_reverse_kl_fit_is_the_global_optimum_not_a_local_one(fit_run):
    """Oracle: brute-force search of KL(Q || P) over single Gaussians (mean, std) on the recipe's grid."""
    import math

    import torch

    from divmin.recipes.fit import FitConfig, FitTask

    _, result = fit_run
    task = FitTask(FitConfig(divergences=("reverse_kl",)))
    x, logp = task.x, task.target
    mus = torch.arange(-6.0, 7.0, 0.05, dtype=torch.float64)
    sds = torch.exp(torch.linspace(math.log(0.2), math.log(3.0), 40, dtype=torch.float64))
    best = math.inf
    for sd in sds:
        logq = -0.5 * ((x[None] - mus[:, None]) / sd) ** 2  # (M, G), normalised on the grid below
        logq = logq - torch.logsumexp(logq, -1, keepdim=True)
        logp_grid = logp - torch.logsumexp(logp, -1)
        kl = (logq.exp() * (logq - logp_grid)).sum(-1)
        best = min(best, float(kl.min()))
    row = next(r for r in result.rows if r["divergence"] == "reverse_kl")
    assert row["KL(Q||P)"] <= best + 1e-3  # at least as good as the best grid point
    assert abs(float(row["mean"]) - (-4.0)) < 0.3  # on the heaviest mode (weight 0.6), not the one it started near
