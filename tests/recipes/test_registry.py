"""The recipe registry: full-size presets, thread bounds, and what a non-main process writes."""

from __future__ import annotations

import dataclasses
import importlib
import json
import shlex

import pytest
import torch

from divmin.cli import main
from divmin.recipes import RecipeResult, _registry, available_recipes, get_recipe, recipe
from divmin.recipes._plots import plt, save_figure


@dataclasses.dataclass
class _ToyConfig:
    steps: int = 10
    width: int = 4
    note: str = "default"


def _toy_run(config: _ToyConfig, out_dir):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, config.steps], label="line")
    ax.set(title="toy", xlabel="x", ylabel="y")
    ax.legend()
    plot = save_figure(fig, out_dir / "toy.png", data={"steps": config.steps})
    seen = {"threads": torch.get_num_threads(), **dataclasses.asdict(config)}
    return RecipeResult(["threads"], [seen], [str(plot)])


@pytest.fixture
def toy():
    """A recipe registered for one test only: full size = steps 1000, width 64; 3 threads."""
    recipe("toy", _ToyConfig, "a toy", full_size=("steps=1000", "width=64"), threads=3)(_toy_run)
    yield get_recipe("toy")
    _registry.RECIPES.discard("toy")


def test_full_applies_the_preset_and_set_values_win(toy, tmp_path, monkeypatch):
    monkeypatch.setattr(_registry, "_cores_per_process", lambda: 8)
    result = _registry.run_recipe("toy", tmp_path, ["width=5"], full=True)
    assert {k: result.rows[0][k] for k in ("steps", "width", "note")} == {"steps": 1000, "width": 5, "note": "default"}
    assert json.loads((tmp_path / "config.json").read_text())["config"]["steps"] == 1000
    assert result.rows[0]["threads"] == 3  # the recipe's own bound
    plain = _registry.run_recipe("toy", tmp_path / "plain", [])
    assert (plain.rows[0]["steps"], plain.rows[0]["width"]) == (10, 4)
    assert json.loads((tmp_path / "results.json").read_text())["processes"] == 1


def test_threads_are_bounded_by_the_cores_of_each_local_process(toy, tmp_path, monkeypatch):
    monkeypatch.setattr(_registry.os, "sched_getaffinity", lambda pid: set(range(4)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # four processes on four cores: one each
    before = torch.get_num_threads()
    assert _registry.run_recipe("toy", tmp_path, []).rows[0]["threads"] == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert _registry.run_recipe("toy", tmp_path / "b", []).rows[0]["threads"] == 3
    assert torch.get_num_threads() == before  # restored after the run


def test_a_non_main_process_runs_but_writes_and_prints_nothing(toy, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RANK", "1")
    assert main(["run", "toy", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["run", "toy", "--out", str(tmp_path), "--full", "--set", "note='cli'"]) == 0
    assert "threads" in capsys.readouterr().out
    # the main process also holds the run lock of --out (engine.run_lock), in a hidden file
    assert sorted(p.name for p in tmp_path.iterdir()) == [".divmin.lock", "config.json", "results.json", "toy.png"]
    config = json.loads((tmp_path / "config.json").read_text())["config"]
    assert (config["steps"], config["width"], config["note"]) == (1000, 64, "cli")
    assert json.loads((tmp_path / "results.json").read_text())["processes"] == 2


def test_bad_presets_and_threads_fail_at_registration():
    with pytest.raises(ValueError, match="unknown config key"):
        recipe("toy-bad", _ToyConfig, "x", full_size=("stepz=3",))
    with pytest.raises(ValueError, match="threads"):
        recipe("toy-bad", _ToyConfig, "x", threads=0)
    assert "toy-bad" not in available_recipes()


@pytest.mark.parametrize("name", available_recipes())
def test_every_recipe_documents_its_full_size_run(name, capsys):
    rec = get_recipe(name)
    assert rec.full_size, name
    assert 1 <= rec.threads <= 2
    # the module docstring spells the preset as the CLI takes it (the shell would strip these quotes)
    doc = " ".join(importlib.import_module(rec.run.__module__).__doc__.split())
    assert f"divmin run {name} --out runs/{name} --full" in doc
    sets = " ".join(f'--set "{o}"' if " " in o or "(" in o else f"--set {o}" for o in rec.full_size)
    assert sets in doc
    assert [a for a in shlex.split(sets) if a != "--set"] == list(rec.full_size)
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert f"full run: --full ({sets})" in out
