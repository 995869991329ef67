"""Recipes: one reproduced claim each (``divmin recipes`` lists them, ``divmin run NAME`` runs one)."""

from . import fdpg_lm, fdpg_toy, fdpo_bandit, fdpo_lm, fit  # noqa: F401  (register the recipes)
from . import fdistill_gmm, fdistill_images  # noqa: F401  (f-distill recipes)
from . import kd_cls, kd_lm  # noqa: F401  (knowledge-distillation recipes)
from . import kd_sinkd  # noqa: F401  (SinKD where teacher and student barely overlap)
from . import kd_cache  # noqa: F401  (kd-lm from teacher caches)
from . import weat  # noqa: F401  (robust classification: WEAT)
from . import depict  # noqa: F401  (deep clustering recipe)
from . import mdlm_text  # noqa: F401  (masked diffusion LM on a text file, AR judge)
from . import didi_synthetic  # noqa: F401  (DiDi-Instruct recipe)
from . import speech_egg  # noqa: F401  (speech to EGG)
from ._registry import (
    Recipe,
    RecipeResult,
    available_recipes,
    format_table,
    get_recipe,
    is_main_process,
    parse_overrides,
    recipe,
    run_recipe,
)
from ._columns import COLUMNS, column_legend, explain_column, format_summary, round_figures  # noqa: F401  (what each table column means)
from ._seeds import SeedsResult, format_seeds_table, run_recipe_seeds  # one recipe over several seeds: mean ± sd
from ._runs import default_checkpoint_every, resumable, run_engine, run_history  # noqa: F401  (each run checkpointed into --out)

# the API page (members_order: __all__) lists the entry points first, internals last
__all__ = [
    "run_recipe",
    "run_recipe_seeds",
    "SeedsResult",
    "format_seeds_table",
    "available_recipes",
    "get_recipe",
    "recipe",
    "Recipe",
    "RecipeResult",
    "format_table",
    "format_summary",
    "column_legend",
    "explain_column",
    "COLUMNS",
    "parse_overrides",
    "is_main_process",
]
