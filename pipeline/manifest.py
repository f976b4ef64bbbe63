"""Per model: manifest.json (every file under publish/ and held/ with its sha256 and size, the source and its
resolved revision, the recipe's hash, phi-forge's version, tool and package versions, each artifact's validation
summary, where it went and its Hub repository), SHA256SUMS and RELEASE.md beside it.

    python -m pipeline.manifest write fixture-phi-3-mini-4k --namespace my-org \
        artifacts/fixture-phi-3-mini-4k/gguf/F16.validation.json ...   # manifest.json, SHA256SUMS, RELEASE.md
    python -m pipeline.manifest verify artifacts/fixture-phi-3-mini-4k   # exit 1 and name every changed file

SHA256SUMS paths are relative to artifacts/<model>/, so `sha256sum -c SHA256SUMS` works there too.
"""
import argparse
import json
import re
import sys
from pathlib import Path

from pipeline import VERSION, recipes
from pipeline.atomic import atomic_file
from pipeline.cli import run_cli
from pipeline.publish import HELD, PUBLISH, destination, repo_id, why_held
from pipeline.pull import sha256

ARTIFACTS = Path("artifacts")
ENVS = recipes.ROOT / "envs"


def published_files(model_folder: Path) -> list[Path]:
    """What the publish stage wrote: the files under publish/ (may be pushed) and held/ (may not)."""
    return sorted(p for where in (PUBLISH, HELD) for p in (model_folder / where).rglob("*")
                  if p.is_file() and not p.name.startswith("."))


def locked_versions(toolchain: str) -> dict[str, str]:
    lines = (ENVS / f"{toolchain}.lock").read_text().splitlines()
    pins = [line.split("==", 1) for line in lines if "==" in line and not line.startswith("#")]
    return {name.strip(): version.strip() for name, version in pins}


def normalised(package: str) -> str:
    return package.lower().replace("_", "-")  # llama_cpp_python in a lock is llama-cpp-python in a .in file


def direct_requirements(toolchain: str) -> list[str]:
    """The packages envs/<toolchain>.in asks for (the lock adds what they depend on)."""
    lines = (ENVS / f"{toolchain}.in").read_text().splitlines()
    return [normalised(re.split(r"[=<>~!\[; ]", line, maxsplit=1)[0]) for line in lines
            if line.strip() and not line.startswith(("#", "-"))]


def validation_summary(record: dict) -> dict:
    checks = record["checks"]
    return {"status": record["status"], **({"reason": record["reason"]} if record.get("reason") else {}),
            "runtime": record["runtime"], "device": record["device"], "precision": record["precision"],
            "size_bytes": record["size_bytes"], "bits_per_weight": record.get("bits_per_weight"),
            "teacher_forced_top1": checks["teacher_forced_top1"].get("value"),
            "mean_kl": checks["kl"].get("mean"), "perplexity_ratio": checks["perplexity"].get("ratio"),
            "tokens_per_s": record.get("tokens_per_s"), "decode_tokens_per_s": record.get("decode_tokens_per_s"),
            "not_run": record.get("not_run", []), "profile": record["profile"]}


def placement(spec: dict, record: dict, namespace: str, model: str) -> dict:
    """Where an artifact's publish folder is (none for a refused one) and the Hub repository it would go to."""
    if spec["refused"]:
        return {"folder": None}
    artifact = record["artifact"]
    return {"folder": f"{destination(record)}/{artifact}", "repo": repo_id(namespace, model, artifact)}


def build(model: str, namespace: str, validations: list[Path], artifacts: Path = ARTIFACTS) -> dict:
    """The manifest of the run's artifacts: those whose validation files its rule declares."""
    folder = artifacts / model
    recipe = recipes.load_supported(model)
    recipe_files = [recipes.RECIPES / "models" / f"{model}.yaml", recipes.RECIPES / "targets.yaml"]
    records = {record["artifact"]: record for record in (json.loads(Path(p).read_text()) for p in validations)}
    specs = {name: recipes.artifact(recipe, *name.split("/", 1)) for name in records}
    toolchains = sorted({"torch", *(s["toolchain"] for s in specs.values())})
    return {
        "schema_version": 2,
        "model": model,
        "phi_forge_version": VERSION,
        "namespace": namespace,
        "provenance": json.loads((folder / "provenance.json").read_text()),
        "recipe_sha256": {path.relative_to(recipes.ROOT).as_posix(): sha256(path) for path in recipe_files},
        "toolchains": {name: locked_versions(name) for name in toolchains},
        "artifacts": {name: validation_summary(record) | placement(specs[name], record, namespace, model)
                      for name, record in records.items()},
        "files": {p.relative_to(folder).as_posix(): {"sha256": sha256(p), "size": p.stat().st_size}
                  for p in published_files(folder)},
    }


def write(model: str, namespace: str, validations: list[Path], artifacts: Path = ARTIFACTS) -> dict:
    manifest = build(model, namespace, validations, artifacts)
    folder = artifacts / model
    with atomic_file(folder / "SHA256SUMS") as tmp:
        tmp.write_text("".join(f"{f['sha256']}  {name}\n" for name, f in manifest["files"].items()))
    with atomic_file(folder / "manifest.json") as tmp:
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    with atomic_file(folder / "RELEASE.md") as tmp:
        tmp.write_text(release_notes(manifest))
    return manifest


def release_notes(manifest: dict) -> str:
    """RELEASE.md: the manifest in words, for the people who publish and the people who download."""
    provenance, artifacts = manifest["provenance"], manifest["artifacts"]
    revision = provenance.get("revision_resolved")
    rows = ["| artifact | validation | size (MiB) | mean KL | where |", "|---|---|---|---|---|"]
    for name, summary in artifacts.items():
        kl = "-" if summary["mean_kl"] is None else f"{summary['mean_kl']:.4f}"
        where = f"`{summary['folder']}/` → `{summary['repo']}`" if summary["folder"] else "not built"
        rows.append(f"| {name} | {summary['status']} | {summary['size_bytes'] / 2**20:.1f} | {kl} | {where} |")
    held = [(name, s) for name, s in artifacts.items() if s["folder"] and s["folder"].startswith(HELD)]
    refused = [(name, s) for name, s in artifacts.items() if not s["folder"]]
    published = [name for name, s in artifacts.items() if s["folder"] and s["folder"].startswith(PUBLISH)]
    why = [f"- {name}: {s['status']}: {why_held(s)}\n" for name, s in held + refused]
    tools = "".join(f"- {toolchain}: " + ", ".join(f"{package} {version}" for package, version in pins.items()
                                                  if normalised(package) in direct_requirements(toolchain)) + "\n"
                    for toolchain, pins in manifest["toolchains"].items())
    return (f"# {manifest['model']}: release notes\n\n"
            f"Source: `{provenance.get('recipe_source', provenance.get('source'))}`"
            + (f" at revision `{revision}`" if revision else "")
            + f". Made by phi-forge {manifest['phi_forge_version']}; recipe sha256: "
            + ", ".join(f"{path} `{digest[:16]}`" for path, digest in manifest["recipe_sha256"].items())
            + f".\n\n## What was built\n\n{len(published)} of {len(artifacts)} artifacts may be published (passed on "
            f"the device they are built for), each to its own repository under `{manifest['namespace']}`: "
            f"`python -m pipeline.push artifacts/{manifest['model']}` shows the plan.\n\n" + "\n".join(rows)
            + "\n\n## Held back or not built, and why\n\n" + ("".join(why) or "Nothing.\n")
            + f"\n## Checksums\n\n`SHA256SUMS` lists the sha256 of each of the {len(manifest['files'])} files under "
            f"`{PUBLISH}/` and `{HELD}/`: `sha256sum -c SHA256SUMS` in this folder, or `python -m pipeline.manifest "
            f"verify artifacts/{manifest['model']}`.\n\n## Tool versions\n\nWhat each toolchain asks for; every "
            f"package's pin is in manifest.json.\n\n{tools}")


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
    write_parser.add_argument("--namespace", required=True, help="Hub organisation or user (config `namespace`)")
    write_parser.add_argument("--artifacts", type=Path, default=ARTIFACTS)
    write_parser.add_argument("validations", nargs="+", type=Path, help="the run's validation.json files")
    verify_parser = commands.add_parser("verify", help="check a model folder's files against its manifest")
    verify_parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    if args.command == "write":
        manifest = write(args.model, args.namespace, args.validations, args.artifacts)
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
