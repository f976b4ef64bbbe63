"""What an ops team uploads, per model: artifacts/<model>/publish/<target>/<artifact>/ for each artifact whose
validation passed, artifacts/<model>/held/<target>/<artifact>/ for the rest (failed, or not run here); each holds the
artifact's files, its validation.json and a model card (README.md) in the Hugging Face model-card convention, which
names the Hub repository and, for GGUF, the Ollama model it goes to under the run's namespace.

    python -m pipeline.publish --recipe fixture-phi-3-mini-4k --namespace my-org \
        --provenance artifacts/fixture-phi-3-mini-4k/provenance.json \
        --publish artifacts/fixture-phi-3-mini-4k/publish --held artifacts/fixture-phi-3-mini-4k/held \
        artifacts/fixture-phi-3-mini-4k/gguf/Q4_K_M.validation.json ...

An artifact's folder is its validation.json's path less `.validation.json` (a refused artifact has none and goes
nowhere). Files are hard-linked from the built artifact where the filesystem allows (no second copy on disk),
but for those a target's `copied` patterns name (recipes/targets.yaml).
"""
import argparse
import json
import shutil
from fnmatch import fnmatch
from pathlib import Path

import yaml

from pipeline import calibration, recipes
from pipeline.atomic import atomic_dir, link_or_copy
from pipeline.cli import run_cli

CHECK_NAMES = {"tokenizer_parity": "tokenizer parity with HF", "stop": "stops at its end token",
               "task": "fixture task answered", "greedy_agreement": "greedy agreement",
               "teacher_forced_top1": "teacher-forced top-1", "kl": "KL to the reference",
               "perplexity": "perplexity ratio", "long_context": "long context"}


def link_tree(source: Path, destination: Path, copied: list[str]):
    """Hard-link the artifact's files, but copy those matching `copied`; a converter's own README.md is left out:
    the card replaces it."""
    for path in sorted(source.rglob("*")):
        if path.is_file() and not path.name.startswith(".") and path.relative_to(source) != Path("README.md"):
            target = destination / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            if any(fnmatch(path.name, pattern) for pattern in copied):
                shutil.copy2(path, target)
            else:
                link_or_copy(path, target)


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


PUBLISH, HELD = "publish", "held"  # the folders under artifacts/<model>/: what may be pushed, what may not


def destination(record: dict) -> str:
    """publish/ for an artifact that passed on the device it is built for, under the full validation profile;
    held/ for a failed one, for one validated on a stand-in (a CUDA or DirectML graph run on the CPU provider
    here), under a lighter profile, or with random weights."""
    device = record["device"]
    on_its_device = device["used"].lower().startswith(device["intended"])  # used: "CPU (openvino 2026.4 ...)"
    full = record["profile"] == "full"
    return PUBLISH if record["status"] == "passed" and on_its_device and full and not record.get("cost_only") else HELD


def repo_id(namespace: str, model: str, artifact: str) -> str:
    """The Hub repository of one artifact: <namespace>/<model>-<target>-<artifact>, its '/' as '-'."""
    return f"{namespace}/{model}-{artifact.replace('/', '-')}"


def ollama_name(namespace: str, model: str, name: str) -> str:
    return f"{namespace}/{model}:{name}"


def why_held(summary: dict) -> str:
    """An artifact's reason to be held, from its manifest entry: its failure, its stand-ins, or its profile."""
    profile = summary["profile"]
    return (summary.get("reason") or "; ".join(summary["not_run"])
            or (f"validated under the {profile} profile" if profile != "full" else ""))


def held_notice(record: dict) -> str:
    if record.get("cost_only"):
        return "> **Held back: random weights.** A scale benchmark's checkpoint: for cost, not for use.\n\n"
    if record["status"] == "failed":
        return f"> **Held back: failed validation.** {record.get('reason', '')}\n\n"
    if record["profile"] != "full":
        return (f"> **Held back: validated under the {record['profile']} profile** (every check, on fewer prompts). "
                "Publish from a run with the full profile.\n\n")
    device = record["device"]
    return (f"> **Held back: not run on {device['intended']} here.** It passed on {device['used']} in its place (see "
            "Not run here); push it only knowingly: `python -m pipeline.push ... --also "
            f"{record['artifact']}`.\n\n")


def calibration_line(folder: Path) -> str:
    """What a calibrated artifact was made with: the calibration.json beside it, from its target's calibration stage
    or its own build (MLX's GPTQ)."""
    record = folder / calibration.RECORD
    if not record.exists():
        return ""
    calibrated = json.loads(record.read_text())
    text = calibrated["text"]
    return (f"- calibrated: {calibrated['method']}, on calibration text of {text['chats']['count']} chats in the "
            f"model's chat template and `{text['prose']['file']}` (sha256 `{text['sha256'][:16]}`), recorded in "
            "`calibration.json`\n")


def card_text(model: str, spec: dict, record: dict, folder: Path, recipe: dict, provenance: dict, card: dict,
              namespace: str) -> str:
    source = provenance.get("recipe_source", provenance.get("source"))
    revision = provenance.get("revision_resolved")
    status = record["status"] + (f": {record['reason']}" if record.get("reason") else "")
    repo = repo_id(namespace, model, record["artifact"])
    usage = card["usage"]
    for name, value in {"model": model, "artifact": spec["name"].replace("/", "-"), "file": main_file(folder),
                        "repo": repo, "ollama": ollama_name(namespace, model, spec["name"])}.items():
        usage = usage.replace("{" + name + "}", value)  # not str.format: usage text has braces of its own
    not_run = "".join(f"- {item}\n" for item in record.get("not_run", []))
    return (front_matter(recipe, provenance, spec, card)
            + f"\n# {model}: {spec['target']} {spec['name']}\n\n"
            + (held_notice(record) if destination(record) == HELD else "")
            + f"{card['description']} Made by phi-forge from `{source}`"
            + (f" at revision `{revision}`" if revision else "") + ".\n\n"
            + f"- precision class: {spec['precision']}; built for: {spec['device']}\n"
            + f"- size: {record['size_bytes'] / 2**20:.1f} MiB"
            + (f", {record['bits_per_weight']:.2f} bits per weight" if record.get("bits_per_weight") else "") + "\n"
            + (f"- context: exact up to {record['valid_context_length']} tokens, as its config.json states "
               "(`valid_context_length`); longer prompts were not validated\n" if record.get("valid_context_length")
               else "")
            + calibration_line(folder)
            + f"- validation: **{status}** (in {record['runtime']['name']} {record['runtime']['version']}, "
            + f"on {record['device']['used']})\n\n"
            + f"## Get it\n\n```sh\nhf download {repo} --local-dir {repo.split('/')[1]}\n```\n\n"
            + f"## Run it\n\n{usage.rstrip()}\n\n"
            + "## Validation\n\nAgainst the float32 PyTorch reference of the source checkpoint, on phi-forge's "
            + "prompt set (chat prompts of a checkable task, a prose passage, prompts past each context "
            + "boundary); the full record is `validation.json`.\n\n" + validation_table(record)
            + (f"\nNot run here:\n\n{not_run}" if not_run else "")
            + f"\n## Licence\n\n{recipe['license']}, as the source checkpoint.\n")


def publish_one(recipe: dict, spec: dict, validation: Path, record: dict, provenance: dict, namespace: str,
                out: Path):
    folder = validation.with_name(validation.name.removesuffix(".validation.json"))
    out.mkdir(parents=True)
    target = recipes.targets()["targets"][spec["target"]]
    link_tree(folder, out, target.get("copied", []))
    shutil.copy2(validation, out / "validation.json")
    card = target["card"]
    (out / "README.md").write_text(card_text(recipe["name"], spec, record, folder, recipe, provenance, card,
                                             namespace))


def publish(recipe: dict, validations: list[Path], provenance: Path, namespace: str, publish_dir: Path,
            held_dir: Path) -> dict[str, list[str]]:
    """Each built artifact into publish_dir if its validation passed, else into held_dir; what went where."""
    provenance = json.loads(Path(provenance).read_text())
    placed = {PUBLISH: [], HELD: []}
    with atomic_dir(publish_dir) as publish_scratch, atomic_dir(held_dir) as held_scratch:
        for validation in map(Path, validations):
            record = json.loads(validation.read_text())
            spec = recipes.artifact(recipe, *record["artifact"].split("/", 1))
            if spec["refused"]:
                continue
            where = destination(record)
            publish_one(recipe, spec, validation, record, provenance, namespace,
                        (publish_scratch if where == PUBLISH else held_scratch) / record["artifact"])
            placed[where].append(record["artifact"])
    return placed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", required=True, help="the model's recipe (recipes/models/<name>.yaml)")
    parser.add_argument("--namespace", required=True, help="Hub organisation or user (config `namespace`)")
    parser.add_argument("--provenance", required=True, type=Path, help="the checkpoint's provenance.json")
    parser.add_argument("--publish", required=True, type=Path, help="folder for the artifacts that passed")
    parser.add_argument("--held", required=True, type=Path, help="folder for the rest")
    parser.add_argument("validations", nargs="+", type=Path, help="each artifact's validation.json")
    args = parser.parse_args(argv)
    placed = publish(recipes.load_supported(args.recipe), args.validations, args.provenance, args.namespace,
                     args.publish, args.held)
    for where, names in placed.items():
        print(f"{where}: {len(names)} artifact(s) {' '.join(names)}")


if __name__ == "__main__":
    run_cli(main)
