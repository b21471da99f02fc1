"""Training recipes (YAML): a recipe's settings over those of the recipe it names as its parent, and the
merge of nested sections that layers them (defaults < parents < recipe < command line). No torch."""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

from bandlift.rt.errors import BandliftError


def merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


MAX_PARENTS = 16  # a recipe's chain of parents stops here (a cycle is refused)


class RecipeError(BandliftError, ValueError):
    """A recipe whose `parent` cannot be followed."""


def read_recipe(path: str | Path) -> dict:
    """A recipe file's settings over its parent's: `parent: FILE` (relative to the recipe's folder) names
    the recipe it changes, whose own parent is followed in turn; the file holds only its differences."""
    layers, seen = [], []
    path = Path(path)
    while True:
        seen.append(path.resolve())
        recipe = yaml.safe_load(path.read_text()) or {}
        parent = recipe.pop("parent", None) if isinstance(recipe, dict) else None  # (not a mapping: merge refuses it)
        layers.append(recipe)
        if parent is None:
            break
        if not isinstance(parent, str) or not parent:
            raise RecipeError(f"{path}: parent must name a recipe file, got {parent!r:.40}")
        parent_path = path.parent / parent
        if parent_path.resolve() in seen or len(seen) > MAX_PARENTS:
            raise RecipeError(f"{path}: parent {parent}: recipes name each other in a cycle (or a chain of more "
                              f"than {MAX_PARENTS})")
        if not parent_path.is_file():
            raise RecipeError(f"{path}: parent {parent}: not a regular file")
        path = parent_path
    out = {}
    for recipe in reversed(layers):
        out = merge(out, recipe)
    return out
