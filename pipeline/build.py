"""The one builder CLI: any artifact of any target in recipes/targets.yaml, from a checkpoint folder.

    python -m pipeline.build --target gguf --artifact F16 --recipe fixture-phi-3-mini-4k \
        --checkpoint artifacts/fixture-phi-3-mini-4k/checkpoint --out /tmp/F16
    python -m pipeline.build --target gguf --artifact Q4_K_M --recipe fixture-phi-3-mini-4k \
        --checkpoint artifacts/fixture-phi-3-mini-4k/checkpoint --base /tmp/F16 --out /tmp/Q4_K_M

Runs in the target's toolchain environment (.envs/<toolchain>/bin/python). Every target's builder is
`pipeline.targets.<target>.build.build(checkpoint, spec, facts, out, base, threads)`; it is handed paths only, and
writes into a scratch folder that is renamed to --out when it is complete. An artifact whose options name a
`base` is made from that artifact's folder, given as --base.
"""
import argparse
import importlib
from pathlib import Path

from pipeline import checkpoint, recipes
from pipeline.atomic import atomic_dir
from pipeline.cli import run_cli


def build(target: str, name: str, checkpoint_folder: Path, out: Path, recipe: dict, base: Path | None = None,
          provenance: Path | None = None, threads: int | None = None) -> Path:
    spec = recipes.artifact(recipe, target, name)
    if spec["refused"]:
        raise recipes.RecipeError(spec["refused"])
    if "base" in spec["options"] and base is None:
        raise recipes.RecipeError(f"{target}/{name} is made from {target}/{spec['options']['base']}: give its "
                                  f"folder as --base")
    facts = checkpoint.facts(checkpoint_folder, recipe.get("overrides"))
    facts["source"] = checkpoint.read_json(provenance)["recipe_source"] if provenance else recipe["source"]
    builder = importlib.import_module(f"pipeline.targets.{target}.build")
    with atomic_dir(out) as scratch:
        builder.build(Path(checkpoint_folder), spec, facts, scratch, base, threads or spec["threads"])
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
    parser.add_argument("--provenance", type=Path, help="the checkpoint's provenance.json (source for metadata)")
    parser.add_argument("--threads", type=int, help="cores to use (default: the artifact's threads)")
    args = parser.parse_args(argv)
    recipe = recipes.load_supported(args.recipe) if args.recipe else recipes.local(args.checkpoint)
    print(build(args.target, args.artifact, args.checkpoint, args.out, recipe, args.base, args.provenance,
                args.threads))


if __name__ == "__main__":
    run_cli(main)
