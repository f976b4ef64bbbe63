"""The one builder CLI: any artifact of any target in recipes/targets.yaml, from a checkpoint folder.

    python -m pipeline.build --target gguf --artifact F16 --recipe fixture-phi-3-mini-4k \
        --checkpoint artifacts/fixture-phi-3-mini-4k/checkpoint --out /tmp/F16
    python -m pipeline.build --target gguf --artifact Q4_K_M --recipe fixture-phi-3-mini-4k \
        --checkpoint artifacts/fixture-phi-3-mini-4k/checkpoint --base /tmp/F16 --out /tmp/Q4_K_M

Runs in the target's toolchain environment (.envs/<toolchain>/bin/python). Every target's builder is
`pipeline.targets.<target>.build.build(checkpoint, spec, facts, out, base, threads)`; it is handed paths only, and
writes into a scratch folder that is renamed to --out when it is complete. An artifact whose options name a
`base` is made from that artifact's folder, given as --base; a `calibrated` one with its target's calibration stage
(pipeline.targets.<target>.calibrate; GGUF: the importance matrix), given as --calibration and handed to the builder
as `calibration=`.

A converter that fails is that artifact's result, not the run's end: the folder then holds only build-failure.json
(why, in one line; the traceback is in the log), which the validator turns into a failed validation.json, so one
model's or one artifact's failed build leaves the rest of the run to finish.
"""
import argparse
import importlib
import json
import shutil
import subprocess
import sys
import traceback
from pathlib import Path

from pipeline import checkpoint, recipes
from pipeline.atomic import atomic_dir
from pipeline.cli import USER_ERRORS, run_cli

FAILURE = "build-failure.json"


def failure(folder: Path | None) -> str | None:
    """Why the build of the artifact in `folder` failed; None for a built artifact."""
    record = Path(folder) / FAILURE if folder else None
    return json.loads(record.read_text())["reason"] if record and record.is_file() else None


def describe(error: Exception) -> str:
    if isinstance(error, subprocess.CalledProcessError):
        command = [Path(str(part)).name for part in error.cmd[:2]]
        return f"{' '.join(command)} exited with status {error.returncode} (its output is in the build's log)"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[-1] if lines else 'no message'}"


def build(target: str, name: str, checkpoint_folder: Path, out: Path, recipe: dict, base: Path | None = None,
          provenance: Path | None = None, threads: int | None = None, calibration: Path | None = None) -> Path:
    spec = recipes.artifact(recipe, target, name)
    if spec["refused"]:
        raise recipes.RecipeError(spec["refused"])
    if "base" in spec["options"] and base is None:
        raise recipes.RecipeError(f"{target}/{name} is made from {target}/{spec['options']['base']}: give its "
                                  f"folder as --base")
    if spec["calibrated"] and calibration is None:
        raise recipes.RecipeError(f"{target}/{name} is made with the model's calibration stage: give its folder "
                                  f"(python -m pipeline.targets.{target}.calibrate) as --calibration")
    calibrated = {"calibration": calibration} if spec["calibrated"] else {}
    facts = checkpoint.facts(checkpoint_folder, recipe.get("overrides"))
    facts["source"] = checkpoint.read_json(provenance)["recipe_source"] if provenance else recipe["source"]
    builder = importlib.import_module(f"pipeline.targets.{target}.build")
    with atomic_dir(out) as scratch:
        base_failure = failure(base)
        reason = base_failure and f"its base {target}/{spec['options']['base']} did not build: {base_failure}"
        if not reason:
            try:
                builder.build(Path(checkpoint_folder), spec, facts, scratch, base, threads or spec["threads"],
                              **calibrated)
            except USER_ERRORS:
                raise
            except Exception as error:  # the converter's fault: recorded for the validator, the run goes on
                traceback.print_exc(file=sys.stderr)
                reason = describe(error)
        if reason:
            for leftover in scratch.iterdir():
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
            (scratch / FAILURE).write_text(json.dumps({"reason": reason}) + "\n")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", required=True, help="a target of recipes/targets.yaml, e.g. gguf")
    parser.add_argument("--artifact", required=True, help="one of the target's artifacts, e.g. Q4_K_M")
    parser.add_argument("--checkpoint", required=True, type=Path, help="the checkpoint folder")
    parser.add_argument("--out", required=True, type=Path, help="the artifact folder to write")
    parser.add_argument("--recipe", help="the model's recipe (recipes/models/<name>.yaml): its overrides, licence "
                                         "and name; without it, the checkpoint folder as it is")
    parser.add_argument("--base", type=Path, help="the folder of the artifact named by options.base")
    parser.add_argument("--calibration", type=Path, help="the folder of the target's calibration stage, for a "
                                                         "calibrated artifact")
    parser.add_argument("--provenance", type=Path, help="the checkpoint's provenance.json (source for metadata)")
    parser.add_argument("--threads", type=int, help="cores to use (default: the artifact's threads)")
    args = parser.parse_args(argv)
    recipe = recipes.load_supported(args.recipe) if args.recipe else recipes.local(args.checkpoint)
    print(build(args.target, args.artifact, args.checkpoint, args.out, recipe, args.base, args.provenance,
                args.threads, args.calibration))


if __name__ == "__main__":
    run_cli(main)
