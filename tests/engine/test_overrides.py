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
