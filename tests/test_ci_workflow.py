"""The CI workflows in .github/workflows/: actionlint on every file, with shellcheck on each `run:` script (both from
envs/workflow.lock, no network), and the artifact workflow's push plan step run on model folders."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, run

BIN = Path(sys.executable).parent  # the workflow environment, .venv/bin
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.y*ml"))
ARTIFACTS_WORKFLOW = ROOT / ".github" / "workflows" / "artifacts.yml"


def test_the_artifact_workflow_is_there():
    assert ARTIFACTS_WORKFLOW in WORKFLOWS


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda path: path.name)
def test_actionlint_finds_nothing(workflow):
    result = run([BIN / "actionlint", "-verbose", workflow.relative_to(ROOT)], check=False,
                 env={"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'Rule "shellcheck" was disabled' not in result.stderr, result.stderr  # shellcheck ran too


def step(name: str) -> dict:
    steps = yaml.safe_load(ARTIFACTS_WORKFLOW.read_text())["jobs"]["artifacts"]["steps"]
    [found] = [s for s in steps if s.get("name", "").startswith(name)]
    return found


def write_model(root: Path, placed: dict[str, str]):
    """artifacts/demo/ with one file per artifact, under publish/ or held/ as `placed` says, and its manifest."""
    folder = root / "artifacts" / "demo"
    artifacts, files = {}, {}
    for artifact, where in placed.items():
        path = folder / where / artifact / "demo.gguf"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"GGUF " + artifact.encode())
        files[f"{where}/{artifact}/demo.gguf"] = {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                                                  "size": path.stat().st_size}
        artifacts[artifact] = {"status": "passed" if where == "publish" else "failed", "reason": "demo",
                               "folder": f"{where}/{artifact}", "repo": f"demo-org/demo-{artifact.replace('/', '-')}",
                               "not_run": []}
    (folder / "manifest.json").write_text(json.dumps({
        "model": "demo", "phi_forge_version": "0.0.0", "namespace": "demo-org", "provenance": {"kind": "local"},
        "recipe_sha256": {"recipes/models/demo.yaml": "0" * 64}, "artifacts": artifacts, "files": files}))


@pytest.mark.parametrize("placed", [{"gguf/Q8_0": "publish", "gguf/F16": "held"}, {"gguf/F16": "held"}],
                         ids=["one passed", "none passed"])
def test_the_push_plan_step_fails_the_job_when_nothing_would_be_pushed(tmp_path, placed):
    write_model(tmp_path, placed)
    for name in (".venv", "pipeline"):
        (tmp_path / name).symlink_to(ROOT / name)
    script = step("Push plan (dry run)")["run"]
    assert "--yes" not in script
    result = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], cwd=tmp_path,
                            capture_output=True, text=True,
                            env={**os.environ, "MODEL": "demo", "HF_HUB_OFFLINE": "1", "HF_TOKEN": ""})
    if "publish" in placed.values():
        assert result.returncode == 0, result.stdout + result.stderr
        assert "gguf/Q8_0 -> demo-org/demo-gguf-Q8_0" in result.stdout and "gguf/F16" not in result.stdout
    else:
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stderr.startswith("phi-forge: error: nothing to push for demo")


def test_the_push_runs_after_the_plan_on_a_tag_with_a_token():
    steps = yaml.safe_load(ARTIFACTS_WORKFLOW.read_text())["jobs"]["artifacts"]["steps"]
    push = step("Push to the Hugging Face Hub")
    assert steps.index(step("Push plan (dry run)")) + 1 == steps.index(push)
    assert push["run"].strip() == '.venv/bin/python -m pipeline.push "artifacts/$MODEL" --yes'
    assert push["if"] == "startsWith(github.ref, 'refs/tags/') && env.HF_TOKEN != ''"


def test_a_ci_profile_build_skips_the_push_plan_and_a_tag_builds_full():
    """Under the ci profile the gate holds every artifact, so the plan (which fails on nothing to push) is skipped;
    a tag has no dispatch input, so it builds under the full profile."""
    job = yaml.safe_load(ARTIFACTS_WORKFLOW.read_text())["jobs"]["artifacts"]
    assert job["env"]["PROFILE"] == "${{ inputs.profile || 'full' }}"
    assert '"validation_profile=$PROFILE"' in step("Build and validate")["run"]
    assert step("Push plan (dry run)")["if"] == "env.PROFILE == 'full'"
