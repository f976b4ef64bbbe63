"""Locked virtual environments, one per toolchain, made on first use (the way Snakemake gives rules conda envs).

envs/<toolchain>.in lists what the toolchain needs; envs/<toolchain>.lock pins every package, made by `lock`.
Toolchains disagree on transformers (optimum-intel 2.2 wants <5.6, mlx-lm 0.32 wants >=5.7), so one
environment cannot serve all.

    python -m pipeline.envs create torch     # .envs/torch from envs/torch.lock
    python -m pipeline.envs lock torch       # envs/torch.lock from envs/torch.in, in a scratch venv
"""
import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENVS = ROOT / "envs"
# torch is pinned to the CPU build: a requirement that lets pip choose pulls gigabytes of CUDA wheels.
CONSTRAINTS = ENVS / "constraints.txt"


def pip_install(python: Path, *args: str):
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "--constraint", str(CONSTRAINTS), *args], check=True)


def make_venv(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    return folder / "bin" / "python"


def create(toolchain: str, root: Path = ROOT / ".envs") -> Path:
    """Create the environment in place; its `ready` file, written last, says it is complete."""
    lock = ENVS / f"{toolchain}.lock"
    folder = root / toolchain
    python = make_venv(folder)
    pip_install(python, "--no-deps", "-r", str(lock))
    subprocess.run([str(python), "-m", "pip", "check"], check=True)
    (folder / "ready").write_text(hashlib.sha256(lock.read_bytes()).hexdigest() + "\n")
    return folder


def lock(toolchain: str) -> Path:
    with tempfile.TemporaryDirectory() as scratch:
        python = make_venv(Path(scratch) / "venv")
        pip_install(python, "-r", str(ENVS / f"{toolchain}.in"))
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
