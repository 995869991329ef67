"""Fuzz `run_recipe_seeds` at its boundary: seeds, overrides and recipe names of every kind give the table
over seeds or a clear error, never a traceback from deep inside. See ``_harness.py`` for the rule."""

from __future__ import annotations

import dataclasses
import math
import tempfile

from hypothesis import given
from hypothesis import strategies as st

from divmin.recipes import RecipeResult, recipe, run_recipe_seeds
from divmin.recipes._registry import RECIPES

from ._harness import FUZZ, classify

OK = ("value", "clear error")


@dataclasses.dataclass
class _Cfg:
    seed: int = 0  # varied by --seeds
    scale: float = 1.0  # multiplies the figure


def _toy(config: _Cfg, out_dir) -> RecipeResult:
    return RecipeResult(["name", "figure"], [{"name": "a", "figure": config.scale * (1 + config.seed)}], [], {})


_VALID = st.lists(st.integers(0, 3), min_size=1, max_size=3, unique=True)
_SEEDS = st.one_of(_VALID, _VALID, _VALID, st.lists(st.integers(-2, 3), max_size=3), st.just(None), st.just("0 1"),
                   st.just([True]), st.just([1.5]))
_SETS = st.sampled_from([(), ("scale=2.0",), ("scale=nan",), ("seed=1",), ("nope=1",), ("scale",), "scale=2.0"])


@FUZZ
@given(seeds=_SEEDS, sets=_SETS, name=st.sampled_from(["fuzz-seeds", "fuzz-seeds", "fuzz-seeds", "fit", "kd-cls", "no-such-recipe"]))
def test_run_recipe_seeds(seeds, sets, name):
    recipe("fuzz-seeds", _Cfg, "a toy for the fuzz suite")(_toy)  # only while the case runs: the registry is global
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = classify("run_recipe_seeds", run_recipe_seeds, name, f"{tmp}/o", seeds, sets)
        assert out in OK, (seeds, sets, name)
        if out == "value" and sets == ("scale=2.0",):
            with tempfile.TemporaryDirectory() as tmp:
                res = run_recipe_seeds(name, f"{tmp}/o", seeds, sets)
            assert res.rows[0]["figure"] == math.fsum(2.0 * (1 + s) for s in seeds) / len(seeds)
    finally:
        RECIPES.discard("fuzz-seeds")
