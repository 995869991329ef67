"""divmin.engine.runs (the override parser): --set strings and parsed values applied at once, named errors."""

import dataclasses

import pytest

from divmin.engine import EngineConfig, Int, Instance, validate
from divmin.engine.runs import apply_values, config_keys, parse_overrides


@dataclasses.dataclass
class _Pair:
    lo: int = 0  # low end
    hi: int = 1  # high end
    engine: EngineConfig = dataclasses.field(default_factory=EngineConfig)  # loop
    CHECKS = dict(lo=Int(), hi=Int(), engine=Instance(EngineConfig))

    def __post_init__(self) -> None:
        validate(self)
        if self.lo >= self.hi:
            raise ValueError("`lo` must be < `hi`")


def test_cross_field_rules_see_the_final_values():
    # one at a time, lo=5 would fail against hi=1 first
    assert parse_overrides(_Pair(), ["lo=5", "hi=9"]) == _Pair(lo=5, hi=9)
    with pytest.raises(ValueError, match="`lo` must be < `hi`"):
        parse_overrides(_Pair(), ["lo=5"])


def test_last_value_wins_and_nested_keys_merge():
    cfg = apply_values(_Pair(), [("hi", 3), ("engine.seed", 4), ("hi", 7), ("engine.max_steps", 2)], source="f.yaml")
    assert (cfg.hi, cfg.engine.seed, cfg.engine.max_steps) == (7, 4, 2)


def test_errors_name_the_key_and_the_source():
    with pytest.raises(ValueError, match=r"config key 'hi' in f.yaml: 'x' is not an int"):
        apply_values(_Pair(), [("hi", "x")], source="f.yaml")
    with pytest.raises(ValueError, match=r"--set hi: 'x' is not an int"):
        parse_overrides(_Pair(), ["hi='x'"])
    with pytest.raises(ValueError, match="unknown config key 'engine.nope'"):
        parse_overrides(_Pair(), ["engine.nope=1"])
    assert "engine.max_steps" in config_keys(_Pair)


@dataclasses.dataclass
class _Outer:
    name: str = "x"  # a field of the outer config
    pair: _Pair = dataclasses.field(default_factory=_Pair)  # a nested method config, with its own engine
    CHECKS = dict(name=Instance(str), pair=Instance(_Pair))

    def __post_init__(self) -> None:
        validate(self)


def test_a_nested_config_error_names_the_dotted_key():
    with pytest.raises(ValueError, match=r"^`pair.lo` must be < `pair.hi`$"):
        parse_overrides(_Outer(), ["pair.lo=5"])
    with pytest.raises(ValueError, match=r"`pair.engine.max_steps` must be"):
        parse_overrides(_Outer(), ["pair.engine.max_steps=0"])
    with pytest.raises(ValueError, match=r"^`lo` must be < `hi`$"):  # at the top: the names as they are
        parse_overrides(_Pair(), ["lo=5"])


def test_a_key_of_a_nested_config_given_at_the_top_is_suggested_dotted():
    with pytest.raises(ValueError, match=r"unknown config key 'engine.max_steps' \(did you mean 'pair.engine.max_steps'\?\)"):
        parse_overrides(_Outer(), ["engine.max_steps=3"])


def test_resume_rules_apply_to_a_nested_engine(tmp_path):
    from divmin.engine.runs import resume_changes

    saved = parse_overrides(_Outer(), ["pair.engine.max_steps=4"])
    resume_changes(saved, parse_overrides(saved, ["pair.engine.max_steps=8", "pair.engine.out_dir='o'"]), where="w")
    with pytest.raises(ValueError, match=r"change pair.lo: drop them"):
        resume_changes(saved, parse_overrides(saved, ["pair.lo=-1"]), where="w")
    with pytest.raises(ValueError, match=r"pair.engine.max_steps \(may only grow, 4 -> 2\)"):
        resume_changes(saved, parse_overrides(saved, ["pair.engine.max_steps=2"]), where="w")


@pytest.mark.parametrize("config_file", ["config.json", "train_config.yaml"])
def test_run_dir_records_the_config_and_resumes_from_it(tmp_path, config_file):
    from divmin.engine import RunDir

    run = RunDir(tmp_path / "r", kind="recipe", name="toy", config_file=config_file)
    assert run.saved(_Outer) is None and run.config(_Outer, None, ["pair.hi=5"], resume=True) == parse_overrides(
        _Outer(), ["pair.hi=5"])  # nothing saved: the defaults
    config = run.config(_Outer, None, ["name='y'", "pair.hi=7"])
    with run.open() as main:
        assert main and run.out.is_dir()
        run.write_config(config)
    assert run.saved(_Outer) == config
    assert run.config(_Outer, None, ["pair.engine.max_steps=2000"], resume=True).pair.hi == 7  # the saved config
    with pytest.raises(ValueError, match=r"`--resume` continues .* change name"):
        run.config(_Outer, None, ["name='z'"], resume=True)
    other = RunDir(tmp_path / "r", kind="recipe", name="other", config_file=config_file)
    with pytest.raises(ValueError, match=r"is not a run of recipe 'other' \(it names 'toy'\)"):
        other.config(_Outer, resume=True)
    (tmp_path / "f").write_text("")
    with pytest.raises(NotADirectoryError, match="is a file"):
        RunDir(tmp_path / "f", kind="recipe", name="toy", config_file=config_file)


def test_load_config_yaml_equals_set(tmp_path):
    from divmin.engine import load_config

    path = tmp_path / "c.yaml"
    path.write_text("name: y\npair:\n  hi: 4\n  engine: {max_steps: 3}\n")
    assert load_config(_Outer, path) == load_config(_Outer, None, ["name=y", "pair.hi=4", "pair.engine.max_steps=3"])
    assert load_config(_Outer, path, ["pair.hi=6"]).pair.hi == 6  # --set wins over the file
