"""Locked virtual environments, one per toolchain, made on first use (the way Snakemake gives rules conda envs).

envs/<toolchain>.in lists what the toolchain needs; envs/<toolchain>.lock pins every package, made by `lock`.
Toolchains disagree on transformers (optimum-intel 2.2 wants <5.6, mlx-lm 0.32 wants >=5.7), so one
environment cannot serve all.

    python -m pipeline.envs create torch     # .envs/torch from envs/torch.lock
    python -m pipeline.envs lock torch       # envs/torch.lock from envs/torch.in, in a scratch venv

envs/<toolchain>.setup.yaml, where present, says what the toolchain needs beyond pip: `build_env`, variables for
packages pip compiles from source (`{envs}` in them is the absolute path of envs/); `sdist`, files taken from a locked package's source distribution (at the
lock's version) into the environment folder.
"""
import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
ENVS = ROOT / "envs"
# torch is pinned to the CPU build: a requirement that lets pip choose pulls gigabytes of CUDA wheels.
CONSTRAINTS = ENVS / "constraints.txt"


def setup(toolchain: str) -> dict:
    path = ENVS / f"{toolchain}.setup.yaml"
    steps = yaml.safe_load(path.read_text()) if path.exists() else {}
    if "build_env" in steps:
        steps["build_env"] = {key: value.replace("{envs}", str(ENVS)) for key, value in steps["build_env"].items()}
    return steps


def pip_install(python: Path, *args: str, env: dict | None = None):
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "--constraint", str(CONSTRAINTS), *args], check=True, env={**os.environ, **(env or {})})


def locked_version(lock: Path, package: str) -> str:
    canonical = lambda name: re.sub(r"[-_.]+", "-", name).lower()
    pins = dict(line.split("==", 1) for line in lock.read_text().splitlines() if "==" in line)
    return {canonical(name): version for name, version in pins.items()}[canonical(package)]


def extract_sdist(python: Path, lock: Path, folder: Path, package: str, prefix: str, members: list, into: str):
    """Download the locked version's sdist and copy prefix/<member> (files or folders) into folder/<into>."""
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run([str(python), "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
                        "--no-binary", ":all:", f"{package}=={locked_version(lock, package)}", "-d", scratch],
                       check=True)
        with tarfile.open(next(Path(scratch).glob("*.tar.gz"))) as sdist:
            root = sdist.getnames()[0].split("/")[0]
            wanted = [f"{root}/{prefix}/{member}" for member in members]
            chosen = [m for m in sdist.getmembers() if any(m.name == w or m.name.startswith(w + "/") for w in wanted)]
            sdist.extractall(scratch, members=chosen, filter="data")
        shutil.copytree(Path(scratch) / root / prefix, folder / into)


def make_venv(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    return folder / "bin" / "python"


def create(toolchain: str, root: Path = ROOT / ".envs") -> Path:
    """Create the environment in place; its `ready` file, written last, says it is complete."""
    lock = ENVS / f"{toolchain}.lock"
    folder = root / toolchain
    python = make_venv(folder)
    steps = setup(toolchain)
    # pip reuses a wheel it built before from the same sdist whatever build_env says (the compile's flags): a
    # toolchain that compiles skips pip's cache.
    no_cache = ["--no-cache-dir"] if "build_env" in steps else []
    pip_install(python, *no_cache, "--no-deps", "-r", str(lock), env=steps.get("build_env"))
    subprocess.run([str(python), "-m", "pip", "check"], check=True)
    if "sdist" in steps:
        extract_sdist(python, lock, folder, **steps["sdist"])
    (folder / "ready").write_text(hashlib.sha256(lock.read_bytes()).hexdigest() + "\n")
    return folder


def lock(toolchain: str) -> Path:
    with tempfile.TemporaryDirectory() as scratch:
        python = make_venv(Path(scratch) / "venv")
        pip_install(python, "-r", str(ENVS / f"{toolchain}.in"), env=setup(toolchain).get("build_env"))
        # --all keeps setuptools, which torch requires at run time; pip itself comes with the venv.
        frozen = subprocess.run([str(python), "-m", "pip", "freeze", "--all", "--exclude", "pip"],
                                check=True, capture_output=True, text=True).stdout
    target = ENVS / f"{toolchain}.lock"
    target.write_text(f"# Made by `python -m pipeline.envs lock {toolchain}` from envs/{toolchain}.in.\n" + frozen)
    return target


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["create", "lock"])
    parser.add_argument("toolchain")
    args = parser.parse_args(argv)
    print({"create": create, "lock": lock}[args.action](args.toolchain))


if __name__ == "__main__":
    main()
