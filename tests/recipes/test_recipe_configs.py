"""Recipe configs nest their method's config and declare only what the recipe adds: no field twice."""

from __future__ import annotations

import dataclasses

import pytest

from divmin.engine import EngineConfig, parse_overrides
from divmin.recipes import get_recipe
from divmin.recipes._engines import refuse_owned

# recipe -> the fields holding the method configs it nests (and the tiny-LM warm-up's, for the LM recipes)
NESTED = {
    "fdpo-lm": ("fdpo", "warmup"),
    "fdpg-lm": ("fdpg", "warmup"),
    "weat": ("weat",),
    "speech-egg": ("speech",),
    "depict": ("depict",),
    "didi-synthetic": ("teacher", "didi"),
    "mdlm-text": ("mdlm", "judge"),
    "fdistill-gmm": ("fdistill",),
}
# recipes that train their own task (many tabular policies or mixtures in one engine run), not a method's
# trainer: they nest no method config
OWN_TASK = ("fit", "fdpo-bandit", "fdpg-toy")


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


@pytest.mark.parametrize("name", sorted(NESTED))
def test_a_recipe_config_never_redeclares_a_field_of_the_configs_it_nests(name):
    cls = get_recipe(name).config_cls
    config = cls()
    for attr in NESTED[name]:
        nested = getattr(config, attr)
        assert dataclasses.is_dataclass(nested), attr
        assert _fields(cls) & _fields(type(nested)) == set(), (name, attr)
    # the training loop lives in the nested method config(s), not beside them
    assert "engine" not in _fields(cls)
    assert any(isinstance(getattr(getattr(config, a), "engine", None), EngineConfig) for a in NESTED[name])


@pytest.mark.parametrize("name", OWN_TASK)
def test_a_recipe_with_its_own_task_keeps_its_own_engine(name):
    config = get_recipe(name).config_cls()
    assert isinstance(config.engine, EngineConfig)
    assert config.engine.max_grad_norm is None  # independent rows of one optimizer: no global clip


def test_the_weat_recipe_config_does_not_take_the_method_config_name():
    import divmin.recipes.weat as recipe

    assert get_recipe("weat").config_cls is recipe.WEATRecipeConfig and not hasattr(recipe, "WEATConfig")


@dataclasses.dataclass
class _Method:
    divergence: str = "reverse_kl"
    lr: float = 1e-3
    engine: EngineConfig = dataclasses.field(default_factory=EngineConfig)


def _method() -> _Method:
    return _Method(lr=0.5, engine=EngineConfig(max_steps=7))


@dataclasses.dataclass
class _Recipe:
    divergences: tuple[str, ...] = ("js",)
    seed: int = 0
    method: _Method = dataclasses.field(default_factory=_method)

    def __post_init__(self) -> None:
        refuse_owned(self, {"method.divergence": "divergences", "method.engine.seed": "seed"})


def test_refuse_owned_names_the_recipe_field_to_set_and_compares_with_the_nested_default():
    assert _Recipe().method.lr == 0.5
    parse_overrides(_Recipe(), ["method.lr=0.1", "method.engine.max_steps=3"])  # the method's own knobs: fine
    with pytest.raises(ValueError, match=r"`method.divergence` is set by the recipe .*from `divergences`.*'js'"):
        parse_overrides(_Recipe(), ["method.divergence=js"])
    with pytest.raises(ValueError, match=r"`method.engine.seed` .*set `seed` instead"):
        parse_overrides(_Recipe(), ["method.engine.seed=3"])


def test_a_resume_may_extend_the_steps_of_a_nested_engine_and_nothing_else():
    from divmin.engine import resume_changes
    from divmin.recipes.fdpo_lm import FDPOLMConfig

    saved = FDPOLMConfig()
    resume_changes(saved, parse_overrides(saved, ["fdpo.engine.max_steps=200", "fdpo.engine.progress=False"]),
                   where="config.json")
    with pytest.raises(ValueError, match=r"fdpo\.engine\.max_steps \(may only grow, 120 -> 60\)"):
        resume_changes(saved, parse_overrides(saved, ["fdpo.engine.max_steps=60"]), where="config.json")
    with pytest.raises(ValueError, match=r"change fdpo\.beta:"):
        resume_changes(saved, parse_overrides(saved, ["fdpo.beta=0.5"]), where="config.json")
