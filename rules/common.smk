# Configuration, validated against pipeline/schemas/config.schema.yaml before anything runs, and the input
# functions the rules share.
import shlex
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
ROOT = Path(workflow.basedir)
PYTHON = sys.executable  # the workflow environment: stages that need no torch run here
RUN_STARTED = time.time()
SHADOW = config["shadow"]

# Every artifact each model's run makes, from recipes/targets.yaml and the model's recipe.
ARTIFACTS = {model: recipes.artifacts(RECIPES[model], config["alternatives"]) for model in MODELS}
TARGETS = recipes.targets()["targets"]

wildcard_constraints:
    model="|".join(map(re.escape, MODELS)),
    target="|".join(map(re.escape, TARGETS)) or "no-target",
    artifact="|".join(sorted({re.escape(name) for t in TARGETS.values() for name in t["artifacts"]})) or "none",


def source_of(model):
    return recipes.source(RECIPES[model], config["sources"])


def is_fixture(model):
    return source_of(model).startswith("fixture://")


def is_local(model):
    return not is_fixture(model) and not source_of(model).startswith("hf://")


def pull_inputs(wildcards):
    """What the pull reads from disk: the built fixture, or the local folder (a hub source is not a file)."""
    if is_fixture(wildcards.model):
        return {"source": f"artifacts/{wildcards.model}/fixture"}
    return {"source": source_of(wildcards.model)} if is_local(wildcards.model) else {}


def pull_source(wildcards, input):
    return input.source if "source" in input.keys() else source_of(wildcards.model)


# A local folder is checked now, so a wrong path or broken weights stop the run before anything is written.
for _model in MODELS:
    if is_local(_model):
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


def toolchain_files(wildcards):
    """The lock, and the set-up beyond pip where a toolchain has one (a compile's flags): a change rebuilds it."""
    return [f"envs/{wildcards.toolchain}.lock",
            *sorted(str(p) for p in Path("envs").glob(f"{wildcards.toolchain}.*") if p.suffix in (".yaml", ".cmake"))]


def runner(toolchain=None):
    """How a job calls `python -m pipeline.<stage>`: in the toolchain's environment (the workflow's for None),
    by absolute path and with this repository on PYTHONPATH, since a job's working directory may be a shadow
    directory that holds only its declared inputs (config `shadow`), with no .envs/ or pipeline/ of its own."""
    python = PYTHON if toolchain is None else str(ROOT / ".envs" / toolchain / "bin" / "python")
    return f"PYTHONPATH={shlex.quote(str(ROOT))} {shlex.quote(python)}"


def spec(wildcards):
    """The artifact's full spec (pipeline.recipes.artifact): options, threads, memory, thresholds, refusal."""
    return recipes.artifact(RECIPES[wildcards.model], wildcards.target, wildcards.artifact)


# What a job's output does not depend on, left out of its params (Snakemake reruns a job whose params changed):
# resources re-plan a job, thresholds re-judge an artifact, neither rebuilds it.
NOT_BUILT_FROM = ("threads", "memory", "validation_memory", "walltime", "thresholds")
NOT_JUDGED_BY = ("threads", "memory", "validation_memory", "walltime")  # validate and publish


def build_params(wildcards):
    return {k: v for k, v in spec(wildcards).items() if k not in NOT_BUILT_FROM}


def validation_params(wildcards):
    return {k: v for k, v in spec(wildcards).items() if k not in NOT_JUDGED_BY}


def checkpoint_mem_mb(wildcards, input):
    """A build's memory from its spec (measured per target by the scale benchmark); the default for the
    reference."""
    return resources.mem_mb(input.checkpoint, spec(wildcards)["memory"] if "artifact" in wildcards.keys()
                            else recipes.DEFAULT_MEMORY)


def decode_threads(wildcards, input):
    """The reference's and a validation's: resources.DECODE_THREADS on a real checkpoint (as rule machine measures
    the bandwidth with), one on a fixture."""
    return resources.threads(input.checkpoint, resources.DECODE_THREADS)


def validation_mem_mb(wildcards, input):
    """The artifact's or its target's `validation: {memory}` in recipes/targets.yaml (measured by the scale
    benchmark), else the default."""
    return resources.mem_mb(input.checkpoint, spec(wildcards)["validation_memory"])


def calibration_mem_mb(wildcards, input):
    """The target's `calibration: {memory}` in recipes/targets.yaml, else the default."""
    return resources.mem_mb(input.checkpoint, TARGETS[wildcards.target]["calibration"].get(
        "memory", recipes.DEFAULT_MEMORY))


def checkpoint_runtime(wildcards, input):
    """Wall time in minutes (Snakemake's `runtime`), from the checkpoint as mem_mb is; per target/artifact
    `walltime` in recipes/targets.yaml, else recipes.DEFAULT_WALLTIME."""
    return resources.runtime_min(input.checkpoint, spec(wildcards)["walltime"] if "artifact" in wildcards.keys()
                                 else recipes.DEFAULT_WALLTIME)


def validations(model):
    return [f"artifacts/{model}/{a['target']}/{a['name']}.validation.json" for a in ARTIFACTS[model]]


def build_inputs(wildcards):
    """Everything a builder reads: the checkpoint, its provenance, the toolchain, the base artifact and the
    calibration stage's output if any."""
    artifact_spec = spec(wildcards)
    inputs = {"checkpoint": f"artifacts/{wildcards.model}/checkpoint",
              "provenance": f"artifacts/{wildcards.model}/provenance.json",
              "env": f".envs/{artifact_spec['toolchain']}/ready"}
    if "base" in artifact_spec["options"]:
        inputs["base"] = f"artifacts/{wildcards.model}/{wildcards.target}/{artifact_spec['options']['base']}"
    if artifact_spec["calibrated"]:
        inputs["calibration"] = f"artifacts/{wildcards.model}/{wildcards.target}/calibration"
    return inputs


def base_arguments(wildcards, input):
    """--base and --calibration for the inputs build_inputs declared."""
    return " ".join(f"--{name} {input[name]}" for name in ("base", "calibration") if name in input.keys())


def calibration_inputs(wildcards):
    """What a target's calibration stage reads: the checkpoint (its chat template), the artifact it runs on."""
    target = TARGETS[wildcards.target]
    return {"checkpoint": f"artifacts/{wildcards.model}/checkpoint",
            "base": f"artifacts/{wildcards.model}/{wildcards.target}/{target['calibration']['base']}",
            "env": f".envs/{target['toolchain']}/ready"}


def calibration_threads(wildcards, input):
    """Its `calibration: {threads}` in recipes/targets.yaml on a real checkpoint; one on a fixture."""
    return resources.threads(input.checkpoint, TARGETS[wildcards.target]["calibration"].get("threads", 1))


def validation_inputs(wildcards):
    """The artifact (unless refused for this model's architecture), its checkpoint, the reference, the toolchain."""
    artifact_spec = spec(wildcards)
    inputs = {"checkpoint": f"artifacts/{wildcards.model}/checkpoint",
              "reference": f"artifacts/{wildcards.model}/reference",
              "env": f".envs/{artifact_spec['toolchain']}/ready"}
    if not artifact_spec["refused"]:
        inputs["artifact"] = f"artifacts/{wildcards.model}/{wildcards.target}/{wildcards.artifact}"
    return inputs


def folder_argument(wildcards, input):
    return f"--folder {input.artifact}" if "artifact" in input.keys() else ""


def publish_inputs(wildcards):
    """Every artifact the model built (a refused one has no folder), each one's validation, the provenance."""
    return {"folders": [f"artifacts/{wildcards.model}/{a['target']}/{a['name']}" for a in ARTIFACTS[wildcards.model]
                        if not a["refused"]],
            "validations": validations(wildcards.model),
            "provenance": f"artifacts/{wildcards.model}/provenance.json"}
