# Configuration, validated against pipeline/schemas/config.schema.yaml before anything runs.
import sys
import time
from pathlib import Path

from pipeline import recipes, resources
from pipeline.checkpoint import CheckpointError, verify
from pipeline.pull import check_architecture

configfile: "config/config.yaml"

try:
    config.update(recipes.validate_config(config))
except recipes.RecipeError as error:
    sys.exit(f"phi-forge: error: {error}")

MODELS = config["models"]
RECIPES = {name: recipes.load(name) for name in MODELS}
PYTHON = sys.executable  # the workflow environment: stages that need no torch run here
TORCH = ".envs/torch/bin/python"  # the toolchain environment of the fixture and reference stages
RUN_STARTED = time.time()

# Every artifact each model's run makes, from recipes/targets.yaml and the model's recipe.
ARTIFACTS = {model: recipes.artifacts(RECIPES[model]) for model in MODELS}
TARGETS = recipes.targets()["targets"]

wildcard_constraints:
    model="|".join(map(re.escape, MODELS)),
    target="|".join(map(re.escape, TARGETS)) or "no-target",


def source_of(model):
    return recipes.source(RECIPES[model], config["sources"])


def is_fixture(model):
    return source_of(model).startswith("fixture://")


def pull_inputs(wildcards):
    return {"fixture": f"artifacts/{wildcards.model}/fixture"} if is_fixture(wildcards.model) else {}


def pull_source(wildcards, input):
    return input.fixture if is_fixture(wildcards.model) else source_of(wildcards.model)


# A local folder is checked now, so a wrong path or broken weights stop the run before anything is written.
for _model in MODELS:
    if not is_fixture(_model) and not source_of(_model).startswith("hf://"):
        try:
            check_architecture(verify(Path(source_of(_model))), RECIPES[_model]["architecture"], source_of(_model))
        except CheckpointError as error:
            sys.exit(f"phi-forge: error: {error}")


def report_failure():
    """After a failed run: repeat each stage's one-line error, drop model folders a failed job left empty."""
    for log in sorted(Path("logs").rglob("*.log")):
        if log.stat().st_mtime >= RUN_STARTED:
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith("phi-forge: error:"):
                    print(line, file=sys.stderr)
    for folder in Path("artifacts").glob("*"):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def toolchain_python(target):
    return f".envs/{TARGETS[target]['toolchain']}/bin/python"


def validations(model):
    return [f"artifacts/{model}/{a['target']}/{a['name']}.validation.json" for a in ARTIFACTS[model]]


def validation_inputs(wildcards):
    """The artifact (unless refused for this model's architecture), the reference, the toolchain environment."""
    spec = recipes.artifact(RECIPES[wildcards.model], wildcards.target, wildcards.artifact)
    inputs = {"reference": f"artifacts/{wildcards.model}/reference",
              "env": f".envs/{spec['toolchain']}/ready"}
    if not spec["refused"]:
        inputs["artifact"] = f"artifacts/{wildcards.model}/{wildcards.target}/{wildcards.artifact}"
    return inputs


def published(model):
    """Publish folders of every artifact that was built (a refused one has nothing to publish)."""
    return [f"artifacts/{model}/publish/{a['target']}/{a['name']}" for a in ARTIFACTS[model] if not a["refused"]]


def publish_inputs(wildcards):
    stem = f"artifacts/{wildcards.model}/{wildcards.target}/{wildcards.artifact}"
    return {"artifact": stem, "validation": f"{stem}.validation.json",
            "provenance": f"artifacts/{wildcards.model}/provenance.json"}

