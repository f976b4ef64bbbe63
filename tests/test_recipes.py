"""Recipes and the run configuration: every recipe valid, unsupported models refused with their reason."""
import re

import pytest
import yaml

from pipeline import recipes

REAL = ["phi-3-mini-4k-instruct", "phi-3-mini-128k-instruct", "phi-3-medium-4k-instruct",
        "phi-3-medium-128k-instruct", "phi-3.5-mini-instruct", "phi-3.5-moe-instruct", "phi-4-mini-instruct"]
UNSUPPORTED = ["phi-3-small-8k-instruct", "phi-3.5-vision-instruct"]


def test_every_family_member_has_a_recipe_pinned_to_a_commit():
    for name in REAL + UNSUPPORTED:
        recipe = recipes.load(name)
        assert re.fullmatch(r"hf://microsoft/[A-Za-z0-9.-]+@[0-9a-f]{40}", recipe["source"]), name


def test_fixture_recipes_name_a_shape_and_build_parameters():
    from pipeline.fixtures.shapes import SHAPES
    fixtures = [n for n in recipes.available() if n.startswith("fixture-")]
    assert len(fixtures) == 5
    for name in fixtures:
        recipe = recipes.load_supported(name)
        assert recipe["source"].removeprefix("fixture://") in SHAPES
        assert recipe["fixture"]["base_vocab"] >= 300


@pytest.mark.parametrize("name", UNSUPPORTED)
def test_unsupported_models_are_refused_with_the_reason(name):
    with pytest.raises(recipes.RecipeError, match="not supported: .*remote code"):
        recipes.load_supported(name)


def test_unknown_model_names_the_recipes_there_are():
    with pytest.raises(recipes.RecipeError, match="unknown model 'phi-9'.*phi-3.5-mini-instruct"):
        recipes.validate_config({"models": ["phi-9"]})


def test_unknown_config_key_is_named():
    with pytest.raises(recipes.RecipeError, match="config top level: Additional properties .*'modells'"):
        recipes.validate_config({"models": ["fixture-phi-3-mini-4k"], "modells": []})


def test_config_defaults_are_filled_in():
    config = recipes.validate_config({"models": ["fixture-phi-3-mini-4k"]})
    assert config["sources"] == {} and config["reference"] == {"max_new_tokens": 32, "top_k": 20}


def test_unknown_recipe_key_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(recipes, "RECIPES", tmp_path)
    (tmp_path / "models").mkdir()
    good = yaml.safe_load((recipes.ROOT / "recipes/models/phi-3.5-mini-instruct.yaml").read_text())
    (tmp_path / "models" / "phi-3.5-mini-instruct.yaml").write_text(yaml.safe_dump({**good, "quantise": "yes"}))
    with pytest.raises(recipes.RecipeError, match="top level: Additional properties .*'quantise'"):
        recipes.load("phi-3.5-mini-instruct")


def test_recipe_overrides_thresholds():
    recipe = {"name": "x", "thresholds": {"int4": {"max_mean_kl": 0.5}}}
    merged = recipes.thresholds(recipe, "int4")
    assert merged["max_mean_kl"] == 0.5
    assert merged["teacher_forced_top1"] == recipes.targets()["thresholds"]["int4"]["teacher_forced_top1"]
