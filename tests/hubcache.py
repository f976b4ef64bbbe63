"""Lay out a Hugging Face Hub cache folder the way huggingface_hub writes one, from a checkpoint folder.

LFS files (*.safetensors) are stored under their sha256, other files under their git blob sha1, and the
snapshot holds relative links to them: the layout huggingface_hub's offline mode reads.
"""
import hashlib
import os
from pathlib import Path


def blob_name(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix == ".safetensors":
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lay_out(cache: Path, repo: str, commit: str, files: list[Path], branch: str = "main") -> Path:
    root = cache / ("models--" + repo.replace("/", "--"))
    snapshot = root / "snapshots" / commit
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / branch).write_text(commit)
    for path in files:
        blob = root / "blobs" / blob_name(path)
        blob.write_bytes(path.read_bytes())
        os.symlink(os.path.relpath(blob, snapshot), snapshot / path.name)
    return snapshot
