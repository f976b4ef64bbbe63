"""Pull a checkpoint into artifacts/<model>/checkpoint/ from the Hugging Face Hub or a local folder.

Only safetensors, JSON, tokenizer and licence files are taken: never pickle weights, never remote code. The
provenance file records where the files came from, the resolved commit and the sha256 of every file.

    python -m pipeline.pull --source hf://microsoft/Phi-3-mini-4k-instruct@<commit> \
        --out artifacts/phi-3-mini-4k-instruct/checkpoint --provenance artifacts/phi-3-mini-4k-instruct/provenance.json
"""
import argparse
import fnmatch
import hashlib
import json
import re
from pathlib import Path

from pipeline.atomic import atomic_dir, atomic_file, link_or_copy
from pipeline.checkpoint import PICKLE_SUFFIXES, CheckpointError, verify
from pipeline.cli import run_cli

WANTED = ["*.safetensors", "model.safetensors.index.json", "config.json", "generation_config.json",
          "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
          "tokenizer.model", "vocab.json", "merges.txt", "LICENSE*", "NOTICE*", "README.md"]
HUB_SOURCE = re.compile(r"^hf://(?P<repo>[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)(@(?P<revision>[A-Za-z0-9_./-]+))?$")
SHA256_BLOB = re.compile(r"^[0-9a-f]{64}$")


def wanted(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in WANTED)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def refuse_pickle_only(names: list[str], where: str):
    if not any(n.endswith(".safetensors") for n in names):
        pickles = [n for n in names if n.endswith(PICKLE_SUFFIXES)]
        if pickles:
            raise CheckpointError(f"{where}: only pickle weights ({', '.join(sorted(pickles))}); phi-forge loads "
                                  f"safetensors only, since pickle files can run code. Use a revision with "
                                  f".safetensors files.")


def hub_snapshot(repo: str, revision: str) -> tuple[Path, str]:
    """Download the wanted files through huggingface_hub's cache; return the snapshot folder and its commit.

    Works offline (HF_HUB_OFFLINE=1) from a populated cache. Each LFS file in the cache is stored under its sha256,
    which is checked against the bytes on disk.
    """
    from huggingface_hub import list_repo_files, snapshot_download
    from huggingface_hub.errors import (LocalEntryNotFoundError, OfflineModeIsEnabled, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    try:
        snapshot = Path(snapshot_download(repo, revision=revision, allow_patterns=WANTED))
    except (RepositoryNotFoundError, RevisionNotFoundError, LocalEntryNotFoundError) as error:
        raise CheckpointError(f"hf://{repo}@{revision}: cannot be had ({type(error).__name__}). Check the repo id "
                              f"and revision, your network or HF_TOKEN, or the HF cache when offline.")
    names = [p.name for p in snapshot.iterdir()]
    if not any(n.endswith(".safetensors") for n in names):
        try:  # say which pickle files the revision has instead, without downloading them
            names += list_repo_files(repo, revision=snapshot.name)
        except OfflineModeIsEnabled:
            pass  # offline, the snapshot folder lists what the cache holds
    refuse_pickle_only(names, f"hf://{repo}@{revision}")
    for path in snapshot.iterdir():
        blob = path.resolve().name
        if path.suffix == ".safetensors" and SHA256_BLOB.match(blob) and sha256(path) != blob:
            raise CheckpointError(f"hf://{repo}@{revision}: {path.name} does not match its sha256 {blob}: a corrupt "
                                  f"download. Delete it from the HF cache and pull again.")
    return snapshot, snapshot.name


def link_wanted(source: Path, out: Path):
    for path in sorted(source.iterdir()):
        if path.is_file() and wanted(path.name):
            link_or_copy(path, out / path.name)


def check_architecture(config: dict, expected: str | None, source: str):
    found = (config.get("architectures") or ["none given"])[0]
    if expected and found != expected:
        raise CheckpointError(f"{source}: config.json says architecture {found}, the recipe says {expected}. "
                              f"Point the recipe at a {expected} checkpoint, or fix its `architecture:`.")


def pull(source: str, out: Path, provenance_path: Path, recipe_source: str | None = None,
         architecture: str | None = None) -> dict:
    match = HUB_SOURCE.match(source)
    if match:
        snapshot, commit = hub_snapshot(match["repo"], match["revision"] or "main")
        origin = {"kind": "hub", "repo": match["repo"], "revision_requested": match["revision"] or "main",
                  "revision_resolved": commit}
    elif source.startswith("hf://"):
        raise CheckpointError(f"source '{source}' is not hf://<org>/<repo>@<revision>. Fix the source.")
    else:
        snapshot = Path(source)
        if not snapshot.is_dir():
            raise CheckpointError(f"{source}: no such folder. Give an existing checkpoint folder or an hf:// source.")
        refuse_pickle_only([p.name for p in snapshot.iterdir()], source)
        origin = {"kind": "local", "path": str(snapshot.resolve())}
    check_architecture(verify(snapshot), architecture, source)
    with atomic_dir(out) as scratch:
        link_wanted(snapshot, scratch)
        verify(scratch)
        files = {p.name: {"sha256": sha256(p), "size": p.stat().st_size} for p in sorted(scratch.iterdir())}
    provenance = {"source": source, "recipe_source": recipe_source or source, **origin, "files": files}
    with atomic_file(provenance_path) as tmp:
        tmp.write_text(json.dumps(provenance, indent=2) + "\n")
    return provenance


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="hf://<org>/<repo>@<revision> or a local folder")
    parser.add_argument("--out", required=True, type=Path, help="checkpoint folder to write")
    parser.add_argument("--provenance", required=True, type=Path, help="provenance JSON to write")
    parser.add_argument("--recipe-source", help="the recipe's source, when --source is what it was built into")
    parser.add_argument("--architecture", help="the architecture the recipe says the checkpoint has")
    args = parser.parse_args(argv)
    provenance = pull(args.source, args.out, args.provenance, args.recipe_source, args.architecture)
    print(f"pulled {len(provenance['files'])} files from {args.source} into {args.out}")


if __name__ == "__main__":
    run_cli(main)
