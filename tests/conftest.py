"""Shared set-up: the real pipeline run on the fixture family, and copies of the repo for bad-input runs."""
import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline import recipes

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"
TORCH_PYTHON = ROOT / ".envs" / "torch" / "bin" / "python"
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
NAMESPACE = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["namespace"]  # of the cards
FIXTURES = ["fixture-phi-3-mini-4k", "fixture-phi-3-mini-128k", "fixture-phi-3-medium-4k", "fixture-phi-3.5-moe",
            "fixture-phi-4-mini"]


def run(args, cwd=ROOT, env=None, check=True, timeout=3600):
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(f"{args} exited {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


# The whole pipeline on the embedded default: 25-45 min on the Xeon this was first measured on, 61 min on a 2-core
# AMD EPYC with half its memory bandwidth; a hung run still fails inside CI's 90 minutes.
PIPELINE_TIMEOUT = 70 * 60


@pytest.fixture(scope="session")
def pipeline_run():
    """`snakemake --cores 2 all` on the embedded default, as the README's first command runs it.

    Tests run in two pytest-xdist workers: the first to get here runs the pipeline, the other waits for it; a run
    with nothing left to do is only planned (a dry run takes no lock, so it cannot collide with a test's own
    Snakemake run in the repository)."""
    (ROOT / ".snakemake").mkdir(exist_ok=True)
    with open(ROOT / ".snakemake" / "pytest-pipeline.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        planned = run([SNAKEMAKE, "--cores", "2", "all", "--dry-run"])
        if "Nothing to be done" in planned.stdout + planned.stderr:
            return planned
        return run([SNAKEMAKE, "--cores", "2", "all"], timeout=PIPELINE_TIMEOUT)


def validate_command(python, model: str, target: str, artifact: str, folder: Path, out: Path) -> list:
    """The validator's CLI as rule validate calls it: an artifact folder, the model's checkpoint and reference."""
    return [python, "-m", "pipeline.validate", "--target", target, "--artifact", artifact, "--recipe", model,
            "--folder", folder, "--checkpoint", ARTIFACTS / model / "checkpoint",
            "--reference", ARTIFACTS / model / "reference", "--out", out]


def linked_model(repo: Path, model: str, names: tuple[str, ...]) -> Path:
    """The main run's `names` of `model` (its checkpoint, reference, an F16 ...) hard-linked into a repository copy,
    so that a test's own Snakemake run there starts from them; the model's folder in the copy."""
    folder = repo / "artifacts" / model
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-al", ARTIFACTS / model / name, folder / name], check=True)
    return folder


def validation_files(model: str) -> list[Path]:
    """The validation files of the model's run, as its rules declare them (not an alternatives run's beside them)."""
    return [ARTIFACTS / model / f"{s['target']}/{s['name']}.validation.json"
            for s in recipes.artifacts(recipes.load(model))]


def verdicts(record: dict) -> tuple[str, dict]:
    """A validation.json's status and each check's, to compare two runs of one artifact."""
    return record["status"], {name: check["status"] for name, check in record["checks"].items()}


def publish_folder(model_folder: Path, artifact: str) -> Path:
    """An artifact's folder from the publish gate: under publish/ or under held/, never both."""
    [folder] = [model_folder / where / artifact for where in ("publish", "held")
                if (model_folder / where / artifact).is_dir()]
    return folder


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def checkpoint_files(folder: Path) -> list[Path]:
    """A checkpoint folder's files, less Snakemake's .snakemake_timestamp marker in directory outputs."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


@pytest.fixture
def repo_copy(tmp_path):
    """The repository's tracked files in a scratch folder, sharing the toolchain environments."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    copy = tmp_path / "repo"
    for name in files:
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, copy / name)
    (copy / ".envs").symlink_to(ROOT / ".envs")
    return copy
