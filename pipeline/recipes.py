"""Recipes: one YAML per model in recipes/models/, the target definitions in recipes/targets.yaml.

Light on purpose (yaml + jsonschema only): the Snakemake process imports it to build the DAG.
"""
import functools
from pathlib import Path

import jsonschema
import yaml

from pipeline.architectures import ARCHITECTURES

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
SCHEMAS = Path(__file__).resolve().parent / "schemas"


class RecipeError(ValueError):
    """A problem with a recipe or a config value, worded for the user, with the fix."""


def load_schema(name: str) -> dict:
    return yaml.safe_load((SCHEMAS / name).read_text())


def check_schema(instance, schema: dict, what: str, fix: str):
    """Raise the first schema violation as one line: where it is, what is wrong, how to fix it."""
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(instance), key=lambda e: list(e.path))
    if errors:
        where = "/".join(str(p) for p in errors[0].path) or "top level"
        raise RecipeError(f"{what} {where}: {errors[0].message}. {fix}")


def available() -> list[str]:
    return sorted(p.stem for p in (RECIPES / "models").glob("*.yaml"))


def load(name: str) -> dict:
    path = RECIPES / "models" / f"{name}.yaml"
    if not path.is_file():
        raise RecipeError(f"unknown model '{name}': no recipes/models/{name}.yaml. "
                          f"Pick one of: {', '.join(available())}, or add a recipe for it.")
    recipe = yaml.safe_load(path.read_text())
    check_schema(recipe, load_schema("recipe.schema.yaml"), f"recipes/models/{name}.yaml",
                 "Fix the recipe (schema: pipeline/schemas/recipe.schema.yaml).")
    if recipe["name"] != name:
        raise RecipeError(f"recipes/models/{name}.yaml says name '{recipe['name']}': the name must match the file.")
    if recipe["source"].startswith("fixture://") and "fixture" not in recipe:
        raise RecipeError(f"recipes/models/{name}.yaml: a fixture:// source needs a `fixture:` block.")
    return recipe


def local(folder: Path) -> dict:
    """The recipe of a checkpoint folder used as it is, with no recipe file: named after the folder."""
    from pipeline.checkpoint import architecture, read_json

    folder = Path(folder)
    return {"name": folder.resolve().name, "source": str(folder), "license": "see the checkpoint's LICENSE",
            "architecture": architecture(read_json(folder / "config.json"), folder)}


def load_supported(name: str) -> dict:
    recipe = load(name)
    if "unsupported" in recipe:
        raise RecipeError(f"model '{name}' is not supported: {recipe['unsupported']}")
    return recipe


# What a build needs beyond the interpreter, and per MB of the checkpoint's weights (bf16 read, float32 held).
DEFAULT_MEMORY = {"base_mb": 1500, "per_weights_mb": 3}
# A job's wall time in minutes (Snakemake's `runtime`, a cluster's time limit): base_min + per_weights_gb_min x the
# checkpoint's weights in GB. Placeholders until the scale benchmark measures them: too low, and a cluster kills
# a real model's job at its time limit; too high, and it waits longer in the queue.
DEFAULT_WALLTIME = {"base_min": 30, "per_weights_gb_min": 10}


@functools.cache  # read once per process: the DAG asks for it for every job
def targets() -> dict:
    """recipes/targets.yaml, checked against its schema. Callers copy what they change."""
    table = yaml.safe_load((RECIPES / "targets.yaml").read_text())
    check_schema(table, load_schema("targets.schema.yaml"), "recipes/targets.yaml",
                 "Fix it (schema: pipeline/schemas/targets.schema.yaml).")
    return table


def thresholds(recipe: dict, precision: str) -> dict:
    merged = dict(targets()["thresholds"][precision])
    merged.update(recipe.get("thresholds", {}).get(precision, {}))
    return merged


def artifact(recipe: dict, target: str, name: str, table: dict | None = None) -> dict:
    """One artifact's full spec for this model: its target's settings, its own, and why it is refused, if it is.

    The architecture's row (pipeline/architectures.py) says which targets cannot make it; an artifact may list
    `unsupported: {architecture: reason}` of its own. Those are not built, and their validation.json says why.
    """
    table = table or targets()
    target_spec = table["targets"][target]
    spec = target_spec["artifacts"][name]
    architecture = ARCHITECTURES.get(recipe["architecture"])
    refusals = {**({recipe["architecture"]: architecture.unsupported[target]}
                   if architecture and target in architecture.unsupported else {}), **spec.get("unsupported", {})}
    refused = refusals.get(recipe["architecture"])
    return {"target": target, "name": name, "model": recipe["name"], "license": recipe["license"],
            "toolchain": target_spec["toolchain"], "runtime": target_spec["runtime"],
            "precision": spec["precision"], "device": spec.get("device", "cpu"),
            "options": {**target_spec.get("options", {}), **spec.get("options", {})},
            "calibrated": spec.get("calibrated", False),
            "threads": spec.get("threads", target_spec.get("threads", 1)),
            "memory": spec.get("memory", target_spec.get("memory", DEFAULT_MEMORY)),
            "validation_memory": spec.get("validation", {}).get("memory", target_spec.get("validation", {}).get(
                "memory", DEFAULT_MEMORY)),
            "walltime": spec.get("walltime", target_spec.get("walltime", DEFAULT_WALLTIME)),
            "thresholds": thresholds(recipe, spec["precision"]),
            "refused": f"{target}/{name} is not built for {recipe['architecture']}: {refused}" if refused else None}


def artifacts(recipe: dict, alternatives: bool = False) -> list[dict]:
    """Every artifact this model's run makes: each target's (but opt-in ones and alternatives), or those the
    recipe's `targets:` names; with `alternatives` (config `alternatives`), also each of its targets'
    alternatives."""
    table = targets()
    chosen = recipe.get("targets", {})
    made = {target: chosen.get(target, [n for n, a in spec["artifacts"].items()
                                        if not a.get("opt_in") and not a.get("alternative")])
            for target, spec in table["targets"].items()}
    if alternatives:
        made = {target: names + [n for n, a in table["targets"][target]["artifacts"].items()
                                 if a.get("alternative") and n not in names]
                for target, names in made.items() if names}
    return [artifact(recipe, target, name, table) for target, names in made.items() for name in names]


def source(recipe: dict, config_sources: dict) -> str:
    """The source to pull: the config's override for this model, else the recipe's pinned one."""
    return config_sources.get(recipe["name"], recipe["source"])


def validate_config(config: dict) -> dict:
    """Check the run configuration against its schema; fill in defaults. One error, named, with the fix."""
    schema = load_schema("config.schema.yaml")
    check_schema(config, schema, "config", f"Allowed keys: {', '.join(schema['properties'])} "
                                           f"(schema: pipeline/schemas/config.schema.yaml).")
    filled = {key: spec["default"] for key, spec in schema["properties"].items() if "default" in spec}
    filled.update(config)
    for key, spec in schema["properties"].items():
        if spec.get("type") == "object" and "properties" in spec:
            filled[key] = {**{k: v["default"] for k, v in spec["properties"].items() if "default" in v},
                           **filled.get(key, {})}
    for name in filled["models"]:
        load_supported(name)
    for name in filled["sources"]:
        if name not in filled["models"]:
            raise RecipeError(f"config sources names '{name}', which is not in models {filled['models']}.")
    return filled
