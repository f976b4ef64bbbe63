"""The CI workflows in .github/workflows/: actionlint on every file, with shellcheck on each `run:` script (both from
envs/workflow.lock, no network), and the artifact workflow's validation gate run on validation files."""
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


def gate_script() -> str:
    steps = yaml.safe_load(ARTIFACTS_WORKFLOW.read_text())["jobs"]["artifacts"]["steps"]
    [step] = [s for s in steps if s.get("name", "").startswith("Fail if an artifact that would be published")]
    assert step["shell"] == "python"
    return step["run"]


def write_record(folder: Path, status: str, checks: dict):
    folder.mkdir(parents=True)
    (folder / "validation.json").write_text(json.dumps({"status": status, "checks": checks}))


@pytest.mark.parametrize("failing", [False, True], ids=["all passed", "one failed"])
def test_the_gate_fails_the_job_when_a_published_artifact_failed(tmp_path, failing):
    publish = tmp_path / "artifacts" / "demo" / "publish"
    write_record(publish / "gguf" / "Q8_0", "passed", {"kl": {"status": "passed"}})
    write_record(publish / "onnx" / "cpu_and_mobile" / "cpu-int4", "failed" if failing else "passed",
                 {"kl": {"status": "failed", "reason": "mean KL 0.3 > 0.25"} if failing else {"status": "passed"}})
    result = subprocess.run([sys.executable, "-c", gate_script()], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "MODEL": "demo"})
    assert result.returncode == (1 if failing else 0), result.stdout + result.stderr
    if failing:
        assert "::error::onnx/cpu_and_mobile/cpu-int4 failed: kl: mean KL 0.3 > 0.25" in result.stdout
        assert "1 of 2 artifacts that would be published did not pass" in result.stderr
