"""The `fdpo-bandit` recipe: finite-data f-DPO training against each divergence's closed-form optimum."""

from __future__ import annotations

import json

import pytest

import divmin.recipes.fdpo_bandit  # noqa: F401  (registers the recipe until recipes/__init__ imports it)
from divmin.recipes import run_recipe
from divmin.recipes.fdpo_bandit import FDPOBanditConfig

from ._figures import assert_close_lists, check_figure

SPECS = FDPOBanditConfig().divergences  # every default member
BETAS = (0.05, 0.3, 1.0)
OVERRIDES = ["engine.progress=False", "engine.tensorboard=False", "responses=16", f"betas={BETAS!r}"]


@pytest.fixture(scope="module")
def bandit_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fdpo_bandit")
    return out, run_recipe("fdpo-bandit", out, OVERRIDES)


def _rows(result):
    return {(r["divergence"], r["beta"]): r for r in result.rows}


def test_outputs_are_written(bandit_run):
    out, result = bandit_run
    for name in ("config.json", "metrics.jsonl", "results.json", "reward_vs_kl.png"):
        assert (out / name).stat().st_size > 0, name
    assert len(result.rows) == len(SPECS) * len(BETAS)
    saved = json.loads((out / "results.json").read_text())
    assert saved["columns"] == result.columns and saved["summary"]["reached_optimum"]
    last = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
    assert last["step"] == 300 and "loss/alpha:0.3" in last and 2048 < last["pairs"] < 4096  # i == j dropped
    figure = check_figure(out / "reward_vs_kl.png")
    assert_close_lists(figure["data"]["kl"], [r["KL(pi||ref)"] for r in saved["rows"]])
    assert_close_lists(figure["data"]["reward"], [r["reward"] for r in saved["rows"]])
    assert {f"{spec} (trained)" for spec in SPECS} <= set(figure["legend"])
    assert figure["data"]["beta"] == [r["beta"] for r in saved["rows"]]  # every point labelled with its beta
    zoom = figure["data"]["zoom_betas"]
    assert zoom == [0.05]  # the smallest beta gets the zoomed panel, its points named by member
    drawn = sorted(figure["texts"])  # the annotations on the panels, read back from the PNG
    assert drawn == sorted([f"β={r['beta']:g}" for r in saved["rows"]]
                           + [r["divergence"] for r in saved["rows"] if r["beta"] == 0.05])
    assert figure["data"]["divergence"] == [r["divergence"] for r in saved["rows"]]
    assert_close_lists(figure["data"]["opt_kl"], [r["opt KL"] for r in saved["rows"]])
    assert_close_lists(figure["data"]["opt_reward"], [r["opt reward"] for r in saved["rows"]])


def test_every_member_at_every_beta_reaches_its_closed_form_optimum(bandit_run):
    """The natural-gradient trainer against the exact answer (fdpo_optimum), member by member."""
    _, result = bandit_run
    for r in result.rows:
        assert r["TV to opt"] < 0.05, r
        assert abs(r["reward"] - r["opt reward"]) < 0.05, r
        assert 0.0 <= r["loss gap"] < 1e-3, r
        assert r["ECE"] < 0.01, r
        assert r["pairs needed"] < result.summary["pairs_seen"], r  # the data suffice, per Cramer-Rao
        assert isinstance(r["pairs needed"], int) and r["pairs needed"] >= 1  # whole pairs, not 7e-08 of one
    assert isinstance(result.summary["pairs_seen"], int)
    assert result.summary["all_reach_optimum"] and result.summary["not_reached"] == {}
    assert len(result.summary["reached_optimum"]) == len(SPECS) * len(BETAS)


def test_adam_on_the_logits_stalls_where_the_natural_gradient_does_not(tmp_path):
    """The measured reason for the natural gradient: Adam leaves forward KL far from its optimum at small beta."""
    adam = run_recipe("fdpo-bandit", tmp_path, ["engine.progress=False", "engine.tensorboard=False", "responses=16",
                                                "divergences=('forward_kl',)", "betas=(0.05,)", "optimizer=adam",
                                                "lr=0.2"])
    (row,) = adam.rows
    assert row["TV to opt"] > 0.2, row  # stalled on a flat stretch of the loss...
    assert row["loss gap"] < 0.02, row  # ...that the loss barely sees (natural gradient: < 1e-3)
    assert "forward_kl@0.05" in adam.summary["not_reached"]
    assert adam.summary["not_reached"]["forward_kl@0.05"].startswith("optimisation")


def test_divergences_differ_as_reported(bandit_run):
    _, result = bandit_run
    rows, summary = _rows(result), result.summary
    # exact optima: JS, not reverse KL, is the greediest member at every beta (as the K = 64 run finds)
    assert summary["greediest_at_optimum"] == {str(b): "js" for b in BETAS}
    assert summary["greediest_trained"] == summary["greediest_at_optimum"]
    for beta in (0.3, 1.0):
        assert rows[("js", beta)]["opt reward"] > rows[("reverse_kl", beta)]["opt reward"] + 0.1
    # smaller beta, larger departure from the reference, for every divergence
    for spec in SPECS:
        assert rows[(spec, 0.05)]["opt KL"] > rows[(spec, 0.3)]["opt KL"] > rows[(spec, 1.0)]["opt KL"]
        assert rows[(spec, 0.05)]["KL(pi||ref)"] > rows[(spec, 1.0)]["KL(pi||ref)"]


def test_divergence_specs_and_refusals():
    assert divmin.divergence("alpha:0.3").params == {"alpha": 0.3}
    assert divmin.divergence("js").name == "js"
    with pytest.raises(ValueError, match="cannot be used with f-DPO"):
        FDPOBanditConfig(divergences=("total_variation",))
    with pytest.raises(ValueError, match="exactly one"):
        divmin.divergence("js:0.5")
