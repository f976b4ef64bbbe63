"""Per model: manifest.json (every published file's sha256 and size, the source and its resolved revision, the
recipe's hash, tool and package versions, each artifact's validation summary) and SHA256SUMS beside it.

    python -m pipeline.manifest write fixture-phi-3-mini-4k      # artifacts/<model>/manifest.json + SHA256SUMS
    python -m pipeline.manifest verify artifacts/fixture-phi-3-mini-4k   # exit 1 and name every changed file

SHA256SUMS paths are relative to artifacts/<model>/, so `sha256sum -c SHA256SUMS` works there too.
"""
import argparse
import json
import sys
from pathlib import Path

from pipeline import recipes
from pipeline.atomic import atomic_file
from pipeline.cli import run_cli
from pipeline.pull import sha256

ARTIFACTS = Path("artifacts")
ENVS = recipes.ROOT / "envs"


def published_files(model_folder: Path) -> list[Path]:
    return sorted(p for p in (model_folder / "publish").rglob("*") if p.is_file() and not p.name.startswith("."))


def locked_versions(toolchain: str) -> dict[str, str]:
    lines = (ENVS / f"{toolchain}.lock").read_text().splitlines()
    pins = [line.split("==", 1) for line in lines if "==" in line and not line.startswith("#")]
    return {name.strip(): version.strip() for name, version in pins}


def validation_summary(record: dict) -> dict:
    checks = record["checks"]
    return {"status": record["status"], **({"reason": record["reason"]} if record.get("reason") else {}),
            "runtime": record["runtime"], "device": record["device"], "precision": record["precision"],
            "size_bytes": record["size_bytes"], "bits_per_weight": record.get("bits_per_weight"),
            "teacher_forced_top1": checks["teacher_forced_top1"].get("value"),
            "mean_kl": checks["kl"].get("mean"), "perplexity_ratio": checks["perplexity"].get("ratio"),
            "tokens_per_s": record.get("tokens_per_s"), "not_run": record.get("not_run", [])}


def build(model: str, artifacts: Path = ARTIFACTS) -> dict:
    folder = artifacts / model
    recipe_files = [recipes.RECIPES / "models" / f"{model}.yaml", recipes.RECIPES / "targets.yaml"]
    specs = recipes.artifacts(recipes.load_supported(model))
    records = {f"{s['target']}/{s['name']}": json.loads(
        (folder / s["target"] / f"{s['name']}.validation.json").read_text()) for s in specs}
    toolchains = sorted({"torch", *(s["toolchain"] for s in specs)})
    return {
        "schema_version": 1,
        "model": model,
        "provenance": json.loads((folder / "provenance.json").read_text()),
        "recipe_sha256": {path.relative_to(recipes.ROOT).as_posix(): sha256(path) for path in recipe_files},
        "toolchains": {name: locked_versions(name) for name in toolchains},
        "artifacts": {name: validation_summary(record) for name, record in records.items()},
        "files": {p.relative_to(folder).as_posix(): {"sha256": sha256(p), "size": p.stat().st_size}
                  for p in published_files(folder)},
    }


def write(model: str, artifacts: Path = ARTIFACTS) -> dict:
    manifest = build(model, artifacts)
    folder = artifacts / model
    with atomic_file(folder / "SHA256SUMS") as tmp:
        tmp.write_text("".join(f"{f['sha256']}  {name}\n" for name, f in manifest["files"].items()))
    with atomic_file(folder / "manifest.json") as tmp:
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def verify(model_folder: Path) -> list[str]:
    """Every published file that is missing, changed, or not in the manifest, in words."""
    listed = json.loads((model_folder / "manifest.json").read_text())["files"]
    problems = []
    for name, expected in listed.items():
        path = model_folder / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif path.stat().st_size != expected["size"] or sha256(path) != expected["sha256"]:
            problems.append(f"{name}: changed since the manifest was written (sha256 differs)")
    for path in published_files(model_folder):
        if path.relative_to(model_folder).as_posix() not in listed:
            problems.append(f"{path.relative_to(model_folder).as_posix()}: not in the manifest")
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    write_parser = commands.add_parser("write", help="write artifacts/<model>/manifest.json and SHA256SUMS")
    write_parser.add_argument("model")
    write_parser.add_argument("--artifacts", type=Path, default=ARTIFACTS)
    verify_parser = commands.add_parser("verify", help="check a model folder's files against its manifest")
    verify_parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    if args.command == "write":
        manifest = write(args.model, args.artifacts)
        print(f"{args.model}: {len(manifest['files'])} files, {len(manifest['artifacts'])} artifacts")
        return
    problems = verify(args.folder)
    for problem in problems:
        print(f"{args.folder}/{problem}")
    if problems:
        sys.exit(f"phi-forge: error: {len(problems)} file(s) in {args.folder} do not match its manifest.json")
    print(f"{args.folder}: every file matches manifest.json")


if __name__ == "__main__":
    run_cli(main)
