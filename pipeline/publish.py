"""What an ops team uploads, per artifact: the artifact's files, its validation.json and a model card (README.md)
in the Hugging Face model-card convention, in artifacts/<model>/publish/<target>/<artifact>/.

    python -m pipeline.publish --recipe fixture-phi-3-mini-4k --target gguf --artifact Q4_K_M \
        --folder artifacts/fixture-phi-3-mini-4k/gguf/Q4_K_M \
        --validation artifacts/fixture-phi-3-mini-4k/gguf/Q4_K_M.validation.json \
        --provenance artifacts/fixture-phi-3-mini-4k/provenance.json --out /tmp/publish-Q4_K_M

Files are hard-linked from the built artifact where the filesystem allows (no second copy on disk).
"""
import argparse
import json
import os
import shutil
from pathlib import Path

import yaml

from pipeline import recipes
from pipeline.atomic import atomic_dir
from pipeline.cli import run_cli

CHECK_NAMES = {"tokenizer_parity": "tokenizer parity with HF", "stop": "stops at its end token",
               "task": "fixture task answered", "greedy_agreement": "greedy agreement",
               "teacher_forced_top1": "teacher-forced top-1", "kl": "KL to the reference",
               "perplexity": "perplexity ratio", "long_context": "long context"}


def link_tree(source: Path, destination: Path):
    """Hard-link the artifact's files; a converter's own README.md is left out: the card replaces it."""
    for path in sorted(source.rglob("*")):
        if path.is_file() and not path.name.startswith(".") and path.relative_to(source) != Path("README.md"):
            target = destination / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:  # another filesystem: copy
                shutil.copy2(path, target)


def base_model(provenance: dict) -> str | None:
    return provenance.get("repo") if provenance.get("kind") == "hub" else None


def front_matter(recipe: dict, provenance: dict, spec: dict, card: dict) -> str:
    fields = {}
    if base_model(provenance):
        fields.update(base_model=base_model(provenance), base_model_relation="quantized")
    fields.update(license=recipe["license"], library_name=card["library_name"],
                  tags=[*card.get("tags", []), spec["precision"], recipe["architecture"], "phi-forge"],
                  pipeline_tag="text-generation")
    return "---\n" + yaml.safe_dump(fields, sort_keys=False) + "---\n"


def main_file(folder: Path) -> str:
    files = [p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")]
    return max(files, key=lambda p: p.stat().st_size).relative_to(folder).as_posix() if files else ""


def check_value(name: str, check: dict) -> str:
    values = {"tokenizer_parity": lambda c: f"{c['mismatches']} of {c['prompts']} prompts differ",
              "stop": lambda c: f"{c['stopped']}/{c['prompts']}",
              "task": lambda c: f"{c['answered']}/{c['prompts']} (reference {c['reference_answered']})",
              "greedy_agreement": lambda c: f"{c['value']:.3f}",
              "teacher_forced_top1": lambda c: f"{c['value']:.4f} over {c['positions']} positions",
              "kl": lambda c: f"mean {c['mean']:.4f}, max {c['max']:.3f}",
              "perplexity": lambda c: f"{c['ratio']:.4f} ({c['artifact']:.3f} vs {c['reference']:.3f})"}
    try:
        return values[name](check) if name in values else ""
    except KeyError:  # a check that was not run has no numbers
        return ""


def validation_table(record: dict) -> str:
    rows = ["| check | status | value | why |", "|---|---|---|---|"]
    for name, check in record["checks"].items():
        reason = check.get("reason", "").replace("|", "/")
        rows.append(f"| {CHECK_NAMES.get(name, name)} | {check['status']} | {check_value(name, check)} | {reason} |")
    return "\n".join(rows) + "\n"


def card_text(model: str, spec: dict, record: dict, folder: Path, recipe: dict, provenance: dict,
              card: dict) -> str:
    source = provenance.get("recipe_source", provenance.get("source"))
    revision = provenance.get("revision_resolved")
    status = record["status"] + (f": {record['reason']}" if record.get("reason") else "")
    usage = card["usage"]
    for name, value in {"model": model, "artifact": spec["name"].replace("/", "-"), "file": main_file(folder)}.items():
        usage = usage.replace("{" + name + "}", value)  # not str.format: usage text has braces of its own
    not_run = "".join(f"- {item}\n" for item in record.get("not_run", []))
    return (front_matter(recipe, provenance, spec, card)
            + f"\n# {model}: {spec['target']} {spec['name']}\n\n"
            + f"{card['description']} Made by phi-forge from `{source}`"
            + (f" at revision `{revision}`" if revision else "") + ".\n\n"
            + f"- precision class: {spec['precision']}; built for: {spec['device']}\n"
            + f"- size: {record['size_bytes'] / 2**20:.1f} MiB"
            + (f", {record['bits_per_weight']:.2f} bits per weight" if record.get("bits_per_weight") else "") + "\n"
            + f"- validation: **{status}** (in {record['runtime']['name']} {record['runtime']['version']}, "
            + f"on {record['device']['used']})\n\n"
            + f"## Run it\n\n{usage.rstrip()}\n\n"
            + "## Validation\n\nAgainst the float32 PyTorch reference of the source checkpoint, on phi-forge's "
            + "prompt set (chat prompts of a checkable task, a prose passage, prompts past each context "
            + "boundary); the full record is `validation.json`.\n\n" + validation_table(record)
            + (f"\nNot run here:\n\n{not_run}" if not_run else "")
            + f"\n## Licence\n\n{recipe['license']}, as the source checkpoint.\n")


def publish(recipe: dict, target: str, name: str, folder: Path, validation: Path, provenance: Path, out: Path):
    spec = recipes.artifact(recipe, target, name)
    card = recipes.targets()["targets"][target]["card"]
    record = json.loads(Path(validation).read_text())
    with atomic_dir(out) as scratch:
        link_tree(folder, scratch)
        shutil.copy2(validation, scratch / "validation.json")
        (scratch / "README.md").write_text(card_text(recipe["name"], spec, record, folder, recipe,
                                                     json.loads(Path(provenance).read_text()), card))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", required=True, help="the model's recipe (recipes/models/<name>.yaml)")
    parser.add_argument("--target", required=True)
    parser.add_argument("--artifact", required=True)
    parser.add_argument("--folder", required=True, type=Path, help="the built artifact")
    parser.add_argument("--validation", required=True, type=Path, help="its validation.json")
    parser.add_argument("--provenance", required=True, type=Path, help="the checkpoint's provenance.json")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    publish(recipes.load_supported(args.recipe), args.target, args.artifact, args.folder, args.validation,
            args.provenance, args.out)
    print(f"published {args.out}")


if __name__ == "__main__":
    run_cli(main)
