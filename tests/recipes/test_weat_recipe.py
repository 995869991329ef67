"""Recipe ``weat`` at tiny settings: the table, the energy traces and the figure."""

from __future__ import annotations

import json

import pytest

from divmin.recipes import run_recipe
from divmin.recipes._plots import figure_record
from divmin.recipes.weat import digits

from ._figures import check_figure

QUIET = ["engine.progress=False", "engine.tensorboard=False"]


def test_digits_split_is_disjoint_and_in_range():
    train, test = digits(0.25, 0)
    assert len(train) + len(test) == 1797 and len(test) == 449
    assert float(train.tensors[0].min()) >= 0 and float(train.tensors[0].max()) == 1.0
    assert not set(map(tuple, train.tensors[0].tolist())) >= set(map(tuple, test.tensors[0].tolist()))


def test_weat_recipe_smoke(tmp_path):
    over = QUIET + ['methods=("standard", "weat")', "width=32", "engine.max_steps=60", "eval_every=30",
                    "attack_steps=3", "pgd_steps=5", "sgld_per_class=4", "sgld_steps=5",
                    "seeds=(0, 1)"]
    result = run_recipe("weat", tmp_path, over)
    assert [r["method"] for r in result.rows] == ["standard", "weat"]
    for r in result.rows:
        assert 0.5 < r["clean_acc"] <= 1 and 0 <= r["pgd_acc"] <= r["clean_acc"]
        assert r["energy_gap"] == pytest.approx(r["energy_adv"] - r["energy_natural"])
        assert 0 <= r["sgld_acc"] <= 1 and r["sgld_fd"] > 0
        assert r["pgd_acc_std"] > 0  # two seeds, two different models
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["summary"]["pgd_acc"].keys() == {"standard", "weat"}
    figure = check_figure(tmp_path / "weat.png")
    assert [p[0] for p in figure["data"]["weat"]] == [30, 60]
    assert len(figure["data"]["standard"]) == 2
    assert (tmp_path / "weat" / "seed1" / "metrics.jsonl").stat().st_size > 0
    grid = figure_record(tmp_path / "weat_samples.png")
    assert grid["title"] and len(grid["data"]["weat"]) == 10 and len(grid["data"]["weat"][0]) == 64
    assert saved["plots"] == [str(tmp_path / "weat.png"), str(tmp_path / "weat_samples.png")]
    assert set(saved["summary"]["init"]) == {"sgld_acc", "sgld_fd"}
