"""Outputs are complete or absent: write under a temporary name, move into place on success. Files another output
already holds are hard-linked, not copied."""
import contextlib
import os
import shutil
from pathlib import Path


@contextlib.contextmanager
def atomic_dir(target: Path):
    """Yield a scratch folder beside `target`; rename it to `target` only if the block finishes."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.partial-*"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    scratch = target.with_name(f".{target.name}.partial-{os.getpid()}")
    scratch.mkdir()
    try:
        yield scratch
        if target.exists():
            shutil.rmtree(target)
        scratch.rename(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(target: Path):
    """Yield a temporary path beside `target`; replace `target` with it only if the block finishes."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        yield scratch
        os.replace(scratch, target)
    finally:
        scratch.unlink(missing_ok=True)


def link_or_copy(source: Path, target: Path):
    """A hard link (no second copy on disk), or a copy across filesystems. A hub cache's snapshot file is a
    relative symlink to its blob: the link is to the blob (Linux's link() links the symlink itself)."""
    try:
        os.link(Path(source).resolve(), target)
    except OSError:
        shutil.copy2(source, target)
