"""`divmin.engine.validate`: every config class in the package, every declared field, edge by edge."""

from __future__ import annotations

import dataclasses
import importlib
import math
import pkgutil
import types
import typing
from pathlib import Path

import pytest

import divmin
from divmin.divergences import Divergence
from divmin.engine import (
    Bool,
    ConfigTypeError,
    Instance,
    Int,
    IsDivergence,
    Number,
    OneOf,
    Text,
    Tuple,
    checks_of,
    is_default,
    validate,
)


def _config_classes() -> list[type]:
    found = {}
    for info in pkgutil.walk_packages(divmin.__path__, "divmin."):
        if info.name.endswith("__main__"):
            continue
        try:
            module = importlib.import_module(info.name)
        except ModuleNotFoundError as err:  # optional extras (triton)
            if err.name != "triton":
                raise
            continue
        for obj in vars(module).values():
            if isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__.startswith("divmin."):
                if obj.__name__.endswith("Config"):
                    found[obj.__qualname__] = obj
    return [found[k] for k in sorted(found)]


CONFIGS = _config_classes()
EXPECTED = {"EngineConfig", "FDPOConfig", "FDPGConfig", "DistillConfig", "FDistillConfig", "DenoiserTrainingConfig",
            "FitConfig", "FDistillGMMConfig", "FDistillImagesConfig", "FDPGLMConfig", "FDPGToyConfig",
            "FDPOBanditConfig", "FDPOLMConfig", "KDClsConfig", "KDLMConfig"}
FIELDS = [(cls, name, check) for cls in CONFIGS for name, check in checks_of(cls).items()]
IDS = [f"{cls.__name__}.{name}" for cls, name, _ in FIELDS]


def _named(name: str) -> str:
    return f"`{name}"  # "`lr`" or "`ratio_clamp[1]`"


def _raises(cls: type, name: str, value, error=(TypeError, ValueError)) -> Exception:
    with pytest.raises(error) as info:
        cls(**{name: value})
    assert _named(name) in str(info.value), str(info.value)
    return info.value


def _accepted(cls: type, name: str, value) -> None:
    """The declared check accepts ``value`` (cross-field rules are not run)."""
    config = cls()
    setattr(config, name, value)
    validate(config)


def test_every_config_class_is_found_and_declares_checks():
    assert EXPECTED <= {cls.__name__ for cls in CONFIGS}
    for cls in CONFIGS:
        assert set(checks_of(cls)) == {f.name for f in dataclasses.fields(cls)}


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_defaults_construct_and_validate(cls):
    config = cls()
    validate(config)
    assert all(is_default(config, f.name) for f in dataclasses.fields(cls))


def _expected_kind(hint) -> tuple[type, bool]:
    """The check kind a field annotation calls for, and whether None is allowed."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = tuple(a for a in args if a is not type(None))
        optional = len(rest) < len(args)
        if Divergence in rest:
            return IsDivergence, optional
        if Path in rest:
            return Instance, optional
        return _expected_kind(rest[0])[0], optional
    if typing.get_origin(hint) is tuple:
        return Tuple, False
    if dataclasses.is_dataclass(hint):
        return Instance, False
    return {float: Number, int: Int, bool: Bool, str: (OneOf, IsDivergence, Text)}[hint], False


@pytest.mark.parametrize("cls,name,check", FIELDS, ids=IDS)
def test_declared_check_matches_the_annotation(cls, name, check):
    kind, optional = _expected_kind(typing.get_type_hints(cls)[name])
    assert isinstance(check, kind), f"{cls.__name__}.{name}: {check} for {kind}"
    assert check.optional == optional
    if optional:
        _accepted(cls, name, None)


def _bad_values(check) -> list:
    none = [] if check.optional else [None]
    if isinstance(check, Number):
        return ["x", True, math.nan, math.inf, *none]
    if isinstance(check, Int):
        return [1.5, True, "1", *none]
    if isinstance(check, Bool):
        return ["yes", 1, *none]
    if isinstance(check, OneOf):
        return ["no_such_choice", [], *none]
    if isinstance(check, Tuple):
        wrong = (object(),) if check.items is None else (0,) * (len(check.items) + 1)  # no item check accepts object()
        return [3, "ab", wrong, *none]
    if isinstance(check, IsDivergence):
        return ["no_such_divergence", 3]
    if isinstance(check, Text):
        return ["", "  ", 3, *none]
    return [3, *none]  # Instance


@pytest.mark.parametrize("cls,name,check", FIELDS, ids=IDS)
def test_a_wrong_value_names_the_field(cls, name, check):
    for value in _bad_values(check):
        _raises(cls, name, value)


@pytest.mark.parametrize("cls,name,check", [f for f in FIELDS if isinstance(f[2], (Number, Int))],
                         ids=[i for i, f in zip(IDS, FIELDS) if isinstance(f[2], (Number, Int))])
def test_a_wrong_type_is_a_type_error(cls, name, check):
    err = _raises(cls, name, "x", ConfigTypeError)
    assert isinstance(err, TypeError) and isinstance(err, ValueError)


def _edges(check) -> list[tuple[float, bool]]:
    """(value, accepted) pairs at each declared bound."""
    if isinstance(check, Number):
        up, down = (lambda b: math.nextafter(b, math.inf)), (lambda b: math.nextafter(b, -math.inf))
    else:
        up, down = (lambda b: b + 1), (lambda b: b - 1)
    out = []
    if check.gt is not None:
        out += [(check.gt, False), (up(check.gt), True)]
    if check.ge is not None:
        out += [(check.ge, True), (down(check.ge), False)]
    if check.lt is not None:
        out += [(check.lt, False), (down(check.lt), True)]
    if check.le is not None:
        out += [(check.le, True), (up(check.le), False)]
    return out


BOUNDED = [f for f in FIELDS if isinstance(f[2], (Number, Int)) and _edges(f[2])]


@pytest.mark.parametrize("cls,name,check", BOUNDED, ids=[f"{c.__name__}.{n}" for c, n, _ in BOUNDED])
def test_bounds_are_enforced_at_the_edge(cls, name, check):
    for value, ok in _edges(check):
        if ok:
            _accepted(cls, name, value)
        else:
            err = _raises(cls, name, value, ValueError)
            assert not isinstance(err, TypeError)


ONE_OF = [f for f in FIELDS if isinstance(f[2], OneOf)]


@pytest.mark.parametrize("cls,name,check", ONE_OF, ids=[f"{c.__name__}.{n}" for c, n, _ in ONE_OF])
def test_choices_are_listed_and_accepted(cls, name, check):
    message = str(_raises(cls, name, "no_such_choice"))
    assert check.names() and all(repr(choice) in message for choice in check.names())
    for choice in check.names():
        _accepted(cls, name, choice)


# ---------------------------------------------------------------- pinned messages and kinds
def test_the_message_names_the_field_and_the_value():
    from divmin.align import FDPGConfig

    with pytest.raises(TypeError, match=r"^`lr` must be a finite number > 0, got 'x'$"):
        FDPGConfig(lr="x")
    with pytest.raises(ValueError, match=r"^`lr` must be a finite number > 0, got 0$"):
        FDPGConfig(lr=0)
    assert FDPGConfig(lr=5e-324).lr == 5e-324


def test_divergence_fields_refuse_with_the_registry_message():
    from divmin.align import FDPOConfig
    from divmin.diffusion import FDistillConfig
    from divmin.recipes.fdpo_bandit import FDPOBanditConfig

    with pytest.raises(ValueError, match=r"^`divergence`: unknown divergence 'nope'; valid names: .*reverse_kl"):
        FDPOConfig(divergence="nope")
    with pytest.raises(ValueError, match=r"^`divergence`: .*cannot be used with f-DPO"):
        FDPOConfig(divergence="total_variation")
    with pytest.raises(ValueError, match=r"^`divergence`: .*h = r\^2 f'' = 0"):
        FDistillConfig(divergence="total_variation")
    with pytest.raises(ValueError, match=r"^`divergences\[1\]`: .*cannot be used with f-DPO"):
        FDPOBanditConfig(divergences=("js", "total_variation"))
    with pytest.raises(ConfigTypeError, match=r"^`divergences\[0\]` must be a divergence spec"):
        FDPOBanditConfig(divergences=(3,))


def test_the_kinds_on_their_own():
    Tuple(items=(Number(gt=0), Int(ge=1)))("pair", [0.5, 2])
    with pytest.raises(ValueError, match=r"^`pair\[1\]` must be an int >= 1, got 0$"):
        Tuple(items=(Number(gt=0), Int(ge=1)))("pair", (0.5, 0))
    with pytest.raises(ValueError, match=r"^`xs` must be a tuple of at least 2 item\(s\), got \(1.0,\)$"):
        Tuple(each=Number(), min_len=2)("xs", (1.0,))
    with pytest.raises(ValueError, match=r"^`p` must be a finite number in \(0, 1\], got 0$"):
        Number(gt=0, le=1)("p", 0)
    with pytest.raises(ValueError, match=r"^`k` must be an int >= 1 or None, got 0$"):
        Int(ge=1, optional=True)("k", 0)
    Text()("label", "kd-lm students/js/seed0")
    with pytest.raises(ValueError, match=r"^`label` must be a non-empty string or None, got ''$"):
        Text(optional=True)("label", "")
    with pytest.raises(ConfigTypeError, match=r"^`label` must be a non-empty string, got 3$"):
        Text()("label", 3)
    registry = {"a": 1}
    check = OneOf(registry)
    registry["b"] = 2  # registered later: accepted, as schedules and samplers are
    check("name", "b")
    with pytest.raises(TypeError, match="exactly one"):
        Tuple()


def test_a_config_without_a_check_per_field_is_refused():
    @dataclasses.dataclass
    class Partial:
        lr: float = 1.0  # learning rate
        steps: int = 1  # steps
        CHECKS = dict(lr=Number(gt=0), stepz=Int(ge=1))

        def __post_init__(self) -> None:
            validate(self)

    with pytest.raises(TypeError, match=r"without a check \['steps'\], checks of no field \['stepz'\]"):
        Partial()


def test_recipe_cli_sets_every_field_back_to_its_default():
    from divmin.recipes import _registry

    for rec in _registry.RECIPES.values():
        default = rec.config_cls()
        for field in dataclasses.fields(default):
            value = getattr(default, field.name)
            if dataclasses.is_dataclass(value):
                continue
            assert _registry.parse_overrides(default, [f"{field.name}={value!r}"]) == default


def test_recipe_cli_fixed_length_tuples_keep_their_item_types():
    from divmin.recipes import parse_overrides
    from divmin.recipes.fit import FitConfig

    assert parse_overrides(FitConfig(), ["grid=(-10, 10, 100)"]).grid == (-10.0, 10.0, 100)
    with pytest.raises(ValueError, match="grid"):
        parse_overrides(FitConfig(), ["grid=(-10, 10, 100.5)"])
    with pytest.raises(ValueError, match="expected 3 items"):
        parse_overrides(FitConfig(), ["grid=(-10, 10)"])
