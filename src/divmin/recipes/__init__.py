"""Recipes: one reproduced claim each (``divmin recipes`` lists them, ``divmin run NAME`` runs one)."""

from . import fit  # noqa: F401  (registers the recipe)
from ._registry import (
    Recipe,
    RecipeResult,
    available_recipes,
    format_table,
    get_recipe,
    parse_overrides,
    recipe,
    run_recipe,
)

__all__ = [
    "Recipe",
    "RecipeResult",
    "available_recipes",
    "format_table",
    "get_recipe",
    "parse_overrides",
    "recipe",
    "run_recipe",
]
