"""Recipe ``weat`` at tiny settings: the table, the energy traces and the figures."""

from __future__ import annotations

import json

import pytest

from divmin.data import find_fashion_mnist
from divmin.engine import parse_overrides
from divmin.recipes import run_recipe
from divmin.recipes._plots import figure_record
from divmin.recipes.weat import WEATRecipeConfig, digits, fashion
from divmin.robust import autoattack_available

from ._figures import assert_close_lists, check_figure

QUIET = ["weat.engine.progress=False", "weat.engine.tensorboard=False"]
TINY = QUIET + ["width=32", "weat.engine.max_steps=60", "weat.engine.eval_every=30", "weat.attack.steps=3",
                "weat.eval_steps=5", "sgld_per_class=4", "sgld_steps=5"]


def test_digits_split_is_disjoint_and_in_range():
    train, test = digits(0.25, 0)
    assert len(train) + len(test) == 1797 and len(test) == 449
    assert float(train.tensors[0].min()) >= 0 and float(train.tensors[0].max()) == 1.0
    assert not set(map(tuple, train.tensors[0].tolist())) >= set(map(tuple, test.tensors[0].tolist()))


def test_weat_recipe_smoke(tmp_path):
    over = TINY + ['methods=("standard", "weat")', "seeds=(0, 1)", "autoattack=False", "trace_every=20"]
    result = run_recipe("weat", tmp_path, over)
    assert [r["method"] for r in result.rows] == ["standard", "weat"]
    assert "autoattack_acc" not in result.columns
    for r in result.rows:
        assert 0.5 < r["clean_acc"] <= 1 and 0 <= r["pgd_acc"] <= r["clean_acc"]
        assert r["energy_gap"] == pytest.approx(r["energy_adv"] - r["energy_natural"])
        assert r["kl"] == pytest.approx(r["kl_marginal"] + r["kl_joint"]) and r["kl"] > 0
        assert 0 <= r["sgld_acc"] <= 1 and r["sgld_fd"] > 0
        assert r["pgd_acc_std"] > 0  # two seeds, two different models
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["summary"]["pgd_acc"].keys() == {"standard", "weat"}
    assert saved["summary"]["autoattack"] == "off" and len(saved["summary"]["seeds"]["weat"]) == 2
    robust = check_figure(tmp_path / "weat.png")  # the claim: accuracy per method and attack, gap beside it
    assert robust["data"]["methods"] == ["standard", "weat"]
    assert "AutoAttack off" in robust["legend"] and "autoattack_acc" not in robust["data"]
    for key in ("clean_acc", "pgd_acc", "energy_gap"):
        per = [[s[key] for s in saved["summary"]["seeds"][m]] for m in ("standard", "weat")]
        assert robust["data"][key]["seeds"] == per
        assert_close_lists(robust["data"][key]["mean"], [r[key] for r in result.rows])
    assert_close_lists(robust["data"]["pgd_acc"]["sd"], [r["pgd_acc_std"] for r in result.rows])
    figure = check_figure(tmp_path / "weat_energy.png")
    weat_trace = figure["data"]["weat"]
    assert [p[0] for p in weat_trace["test"]] == [30, 60] and [p[0] for p in weat_trace["train"]] == [20, 40, 60]
    assert all(p[2] is not None for p in weat_trace["train"])  # the training attack's energies
    assert all(p[2] is None for p in figure["data"]["standard"]["train"])  # standard training attacks nothing
    assert (tmp_path / "weat" / "seed1" / "metrics.jsonl").stat().st_size > 0
    grid = figure_record(tmp_path / "weat_samples.png")
    assert grid["title"] and len(grid["data"]["weat"]) == 10 and len(grid["data"]["weat"][0]) == 64
    assert saved["plots"] == [str(tmp_path / n) for n in ("weat.png", "weat_energy.png", "weat_samples.png")]
    assert set(saved["summary"]["init"]) == {"sgld_acc", "sgld_fd"}
    course = saved["summary"]["train_energy_gap"]
    assert set(course) == {"weat"}  # standard training has no adversary
    gaps = [p[2] - p[1] for p in weat_trace["train"]]
    assert course["weat"] == pytest.approx({"first": gaps[0], "min": min(gaps), "max": max(gaps), "last": gaps[-1]})


def test_weat_recipe_claims_and_autoattack_column(tmp_path):
    over = TINY + ['methods=("trades", "weat")', "autoattack_size=20", "sgld_init=gaussian",
                   "weat.engine.max_steps=30"]
    result = run_recipe("weat", tmp_path, over)
    summary = json.loads((tmp_path / "results.json").read_text())["summary"]
    w, t = summary["seeds"]["weat"][0], summary["seeds"]["trades"][0]
    assert summary["weat_matches_trades_pgd_acc"] == (w["pgd_acc"] >= t["pgd_acc"] - 0.01)
    assert summary["weat_beats_trades_pgd_acc_every_seed"] == (w["pgd_acc"] > t["pgd_acc"])
    if autoattack_available():
        assert summary["autoattack"] == "run" and "autoattack_acc" in result.columns
        plotted = check_figure(tmp_path / "weat.png")["data"]["autoattack_acc"]["mean"]
        assert_close_lists(plotted, [r["autoattack_acc"] for r in result.rows])
        for r in result.rows:  # an accuracy over 20 examples: a multiple of 1/20
            assert 0 <= r["autoattack_acc"] <= 1 and round(r["autoattack_acc"] * 20, 6).is_integer()
    else:
        assert summary["autoattack"].startswith("not run") and "autoattack_acc" not in result.columns
        figure = check_figure(tmp_path / "weat.png")
        assert "AutoAttack not measured" in figure["title"] or any("not run" in t for t in figure["legend"])


def test_bad_recipe_settings_name_the_field():
    with pytest.raises(ValueError, match="`dataset`"):
        WEATRecipeConfig(dataset="cifar10")
    with pytest.raises(ValueError, match="`sgld_init`"):
        WEATRecipeConfig(sgld_init="noise")
    # set per run by the recipe: refused rather than silently replaced
    for key, source in (("weat.objective=trades", "methods"), ("weat.engine.log_every=5", "trace_every"),
                        ("weat.engine.seed=3", "seeds")):
        with pytest.raises(ValueError, match=f"from `{source}`"):
            parse_overrides(WEATRecipeConfig(), [key])


@pytest.mark.skipif(find_fashion_mnist() is None, reason="Fashion-MNIST IDX files are not installed")
def test_fashion_subsets_are_flat_in_range_and_seeded():
    train, test = fashion(300, 100, 0)
    assert tuple(train.tensors[0].shape) == (300, 784) and len(test) == 100
    assert 0 <= float(train.tensors[0].min()) and float(train.tensors[0].max()) <= 1
    other = fashion(300, 100, 1)[0]  # another subset
    assert not (other.tensors[0] == train.tensors[0]).all()
