"""The command line: listings, runs and clear errors."""

from __future__ import annotations

import dataclasses

import pytest

import divmin
from divmin.cli import main
from divmin.recipes import available_recipes, parse_overrides, run_recipe
from divmin.recipes.fit import FitConfig


def test_divergences_table_lists_every_member(capsys):
    assert main(["divergences"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    for name in divmin.available_divergences():
        assert lines[name][1] == divmin.divergence(name).kind
    assert "h bounded" in out and "mode-seeking" in out
    assert lines["sinkhorn"][-2:] == ["-", "-"]  # no f, so no tails to report


def test_recipes_lists_fit(capsys):
    assert main(["recipes"]) == 0
    assert "fit" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["run", "nope", "--out", "X"], "unknown recipe 'nope'; available: " + ", ".join(available_recipes())),
        (["run", "fit", "--out", "X", "--set", "bogus=1"], "valid keys"),
        (["run", "fit", "--out", "X", "--set", "lr=fast"], "lr"),
        (["run", "fit", "--out", "X", "--set", "divergences=('kl',)"], "forward_kl"),
        (["run", "fit", "--out", "X", "--set", "engine.max_steps=0"], "max_steps"),
        (["run", "fit", "--out", "X", "--set", "noequals"], "key=value"),
    ],
)
def test_cli_errors_are_one_clear_line(argv, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


def test_values_are_literals_never_code(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(ValueError, match="lr"):
        parse_overrides(FitConfig(), [f"lr=__import__('pathlib').Path('{marker}').touch()"])
    assert not marker.exists()


def test_overrides_reach_nested_configs_and_coerce_types():
    cfg = parse_overrides(FitConfig(), ["lr=1", "engine.max_steps=7", "means=(-3, 0, 3)"])
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.engine.max_steps == 7 and cfg.means == (-3.0, 0.0, 3.0)
    assert dataclasses.is_dataclass(cfg.engine)


def test_resume_is_refused_by_recipes_that_cannot_resume(tmp_path, capsys):
    with pytest.raises(ValueError, match="does not resume"):
        run_recipe("kd-cls", tmp_path, [], resume=True)
    assert not (tmp_path / "config.json").exists()
    assert main(["run", "fdistill-gmm", "--out", str(tmp_path), "--resume"]) == 2
    assert "does not resume" in capsys.readouterr().err
