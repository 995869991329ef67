"""`divmin run NAME --seeds ...`: one run per seed, the table as mean ± sd over them."""

from __future__ import annotations

import dataclasses
import json
import math
import statistics

import pytest

from divmin.cli import main
from divmin.recipes import RecipeResult, recipe, run_recipe_seeds
from divmin.recipes._registry import RECIPES

CALLS: list[int] = []


@dataclasses.dataclass
class _SeedCfg:
    seed: int = 0  # the only key --seeds varies
    scale: float = 1.0  # multiplies every figure


def _toy(config: _SeedCfg, out_dir) -> RecipeResult:
    CALLS.append(config.seed)
    s, k = config.seed, config.scale
    rows = [{"divergence": "a", "beta": 0.1, "seed": s, "score": k * (1 + s), "count": 2 * s},
            {"divergence": "b", "beta": 0.1, "seed": s, "score": k * s ** 2, "count": 1},
            {"divergence": "b", "beta": 1.0, "seed": s, "score": -k, "count": 1}]
    return RecipeResult(["divergence", "beta", "seed", "score", "count"], rows, [],
                        {"best": "a" if s else "b", "gap": k * s, "scale": k, "per_model": {"a": s, "b": k}})


@pytest.fixture
def toy():
    recipe("test-seeds", _SeedCfg, "a toy whose figures are known functions of the seed")(_toy)
    CALLS.clear()
    yield "test-seeds"
    RECIPES.discard("test-seeds")


def test_rows_are_mean_and_sample_sd_over_seeds(toy, tmp_path):
    res = run_recipe_seeds(toy, tmp_path / "o", [0, 1, 3], ["scale=2.0"])
    a, b, b1 = res.rows  # rows matched by position: a numeric label (beta) keeps rows apart
    assert (a["divergence"], b["divergence"], b1["beta"]) == ("a", "b", 1.0) and "seed" not in a
    assert b1["score"] == -2.0
    assert a["score"] == pytest.approx(statistics.fmean([2, 4, 8]))
    assert b["score"] == pytest.approx(statistics.fmean([0, 2, 18]))
    spread = res.summary["spread"]
    assert spread[0]["score"]["sd"] == pytest.approx(statistics.stdev([2, 4, 8]))
    assert b["count"] == 1 and "count" not in spread[1]  # equal on every seed: kept as is
    assert res.summary["gap"]["values"] == [0, 2, 6]
    assert res.summary["best"] == {"per_seed": ["b", "a", "a"]}
    assert res.summary["scale"] == 2.0  # equal on every seed: no spread
    assert res.summary["per_model"]["a"]["mean"] == pytest.approx(4 / 3) and res.summary["per_model"]["b"] == 2.0
    saved = json.loads((tmp_path / "o" / "results.json").read_text())
    assert saved["seeds"] == [0, 1, 3] and saved["rows"] == res.rows
    assert len(saved["summary"]["cpu_seconds"]["per_seed"]) == 3
    for s in (0, 1, 3):  # each seed is a complete run of its own, with its seed set
        cfg = json.loads((tmp_path / "o" / f"seed-{s}" / "config.json").read_text())["config"]
        assert cfg == {"seed": s, "scale": 2.0}


def test_resume_reads_finished_seeds_back(toy, tmp_path):
    run_recipe_seeds(toy, tmp_path / "o", [0, 1])
    assert CALLS == [0, 1]
    again = run_recipe_seeds(toy, tmp_path / "o", [0, 1, 2], resume=True)
    assert CALLS == [0, 1, 2]  # only the new seed ran
    assert again.rows[0]["score"] == pytest.approx(2.0)


def test_resume_reuses_the_recorded_settings_and_refuses_others(toy, tmp_path):
    run_recipe_seeds(toy, tmp_path / "o", [0, 1], ["scale=2.0"])
    CALLS.clear()
    again = run_recipe_seeds(toy, tmp_path / "o", [0, 1, 2], resume=True)  # no --set: the recorded one
    assert CALLS == [2] and again.summary["spread"][0]["score"]["values"] == [2.0, 4.0, 6.0]
    with pytest.raises(ValueError, match="resume without --set"):
        run_recipe_seeds(toy, tmp_path / "o", [0, 1, 3], ["scale=5.0"], resume=True)
    recipe("test-other", _SeedCfg, "another recipe")(_toy)
    try:
        with pytest.raises(ValueError, match="holds a --seeds run of recipe 'test-seeds'"):
            run_recipe_seeds("test-other", tmp_path / "o", [0], resume=True)
        (tmp_path / "o" / "seeds.json").unlink()  # even without the record, a seed of another recipe is refused
        with pytest.raises(ValueError, match="is a result of recipe 'test-seeds'"):
            run_recipe_seeds("test-other", tmp_path / "o", [0], resume=True)
    finally:
        RECIPES.discard("test-other")


def test_rows_that_differ_between_seeds_are_matched_by_label(tmp_path):
    def uneven(config, out_dir):
        rows = [{"divergence": d, "seed": config.seed, "score": float(config.seed)}
                for d in (["a", "b"] if config.seed else ["b"])]
        # rows told apart by a number only (beta) stay apart; a cell that is a number on one seed only is NaN
        rows += [{"divergence": "c", "beta": b, "seed": config.seed, "score": b * (1 + config.seed),
                  "note": config.seed or None} for b in (0.1, 1.0)]
        return RecipeResult(["divergence", "beta", "seed", "score", "note"], rows, [], {})

    recipe("test-uneven", _SeedCfg, "rows that depend on the seed")(uneven)
    try:
        res = run_recipe_seeds("test-uneven", tmp_path / "o", [0, 2])
    finally:
        RECIPES.discard("test-uneven")
    assert [(r["divergence"], r["score"]) for r in res.rows[:: 3]] == [("b", 1.0), ("a", 2.0)]
    assert res.summary["spread"][3] == {}  # one seed only: its value, no spread
    c1, c2 = res.rows[1:3]
    assert (c1["beta"], c2["beta"]) == (0.1, 1.0) and c2["score"] == pytest.approx(2.0)
    assert math.isnan(c1["note"]) and res.summary["spread"][1]["note"]["values"] == [None, 2]


def test_cli_refusals_are_one_line_and_exit_2(tmp_path, capsys):
    for argv in (["fit", "--seeds", "0", "1"], ["kd-cls", "--seeds", "0"], ["fdpo-bandit", "--seeds", "1", "1"]):
        assert main(["run", *argv, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("divmin: error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_cli_prints_mean_sd_and_cpu_seconds(toy, tmp_path, capsys):
    assert main(["run", toy, "--out", str(tmp_path / "o"), "--seeds", "0", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 ± 1.4" in out  # a's score: 1 and 3
    assert "CPU seconds:" in out and "seed-0" not in out.split("wrote")[0]


@pytest.mark.parametrize("name,sets,seeds,err", [
    ("kd-cls", (), [0, 1], "seeds=\\(0, 1, 2\\)"),  # runs its seeds itself
    ("fit", (), [0, 1], "no `seed` key"),
    ("test-seeds", (), [0, 0], "repeat"),
    ("test-seeds", (), [-1], "ints >= 0"),
    ("test-seeds", ("seed=3",), [0], "--seeds sets"),
])
def test_refusals_name_what_to_do(toy, tmp_path, name, sets, seeds, err):
    with pytest.raises(ValueError, match=err):
        run_recipe_seeds(name, tmp_path / "o", seeds, sets)
    assert CALLS == []


def test_a_nan_on_one_seed_is_not_dropped():
    from divmin.recipes._seeds import mean_sd as _mean_sd

    assert all(map(math.isnan, _mean_sd([1.0, math.nan, 3.0])))
    mean, sd = _mean_sd([1.0, math.inf])
    assert mean == math.inf and math.isnan(sd)
    assert _mean_sd([2.5]) == (2.5, 0.0)


def test_ctrl_c_hint_repeats_the_seeds_and_resume_reads_the_finished_ones_back(toy, tmp_path, capsys, monkeypatch):
    import divmin.recipes._seeds as seeds_module

    real = seeds_module.run_recipe

    def stop_at_seed_2(name, out, overrides, **kw):
        if "seed=2" in overrides:
            raise KeyboardInterrupt
        return real(name, out, overrides, **kw)

    monkeypatch.setattr(seeds_module, "run_recipe", stop_at_seed_2)
    out = str(tmp_path / "o")
    assert main(["run", toy, "--out", out, "--seeds", "0", "2"]) == 130
    hint = capsys.readouterr().err.split("continue with: ")[1].strip()
    assert hint == f"divmin run {toy} --out {out} --seeds 0 2 --resume"
    monkeypatch.setattr(seeds_module, "run_recipe", real)
    CALLS.clear()
    assert main(hint.split()[1:]) == 0
    assert CALLS == [2]  # seed 0 was read back
