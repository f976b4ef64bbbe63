"""Pull: local folders and the Hub path through huggingface_hub's own offline cache, with provenance."""
import hashlib
import sys

import pytest

from conftest import ARTIFACTS, FIXTURES, SNAKEMAKE, checkpoint_files, read_json, run
from hubcache import lay_out

COMMIT = "f39ac1d28e925b323eae81227eaba4464caced4e"  # the pin in recipes/models/phi-3-mini-4k-instruct.yaml
REPO = "microsoft/Phi-3-mini-4k-instruct"


@pytest.fixture
def fixture_files(pipeline_run):
    return checkpoint_files(ARTIFACTS / "fixture-phi-3-mini-4k" / "checkpoint")


def pull(source, tmp_path, cache=None):
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache or tmp_path / "empty-cache")}
    return run([sys.executable, "-m", "pipeline.pull", "--source", source, "--out", tmp_path / "out",
                "--provenance", tmp_path / "provenance.json"], env=env, check=False)


def test_provenance_records_every_file_with_its_sha256(pipeline_run):
    for model in FIXTURES:
        provenance = read_json(ARTIFACTS / model / "provenance.json")
        assert provenance["kind"] == "local" and provenance["recipe_source"].startswith("fixture://")
        folder = ARTIFACTS / model / "checkpoint"
        assert sorted(provenance["files"]) == [p.name for p in checkpoint_files(folder)]
        for name, entry in provenance["files"].items():
            data = (folder / name).read_bytes()
            assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def test_hub_branch_resolves_to_its_commit_offline(tmp_path, fixture_files):
    remote_code = tmp_path / "modeling_phi3.py"
    remote_code.write_text("raise SystemExit('remote code ran')\n")
    lay_out(tmp_path / "cache", REPO, COMMIT, fixture_files + [remote_code])
    result = pull(f"hf://{REPO}@main", tmp_path, tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    provenance = read_json(tmp_path / "provenance.json")
    assert provenance["revision_requested"] == "main" and provenance["revision_resolved"] == COMMIT
    assert "modeling_phi3.py" not in provenance["files"], "remote code must never be pulled"
    assert sorted(provenance["files"]) == sorted(p.name for p in fixture_files)


def test_hub_pickle_only_revision_is_refused(tmp_path, fixture_files):
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    files = [p for p in fixture_files if p.suffix != ".safetensors" and p.name != "model.safetensors.index.json"]
    lay_out(tmp_path / "cache", REPO, COMMIT, files + [tmp_path / "pytorch_model.bin"])
    result = pull(f"hf://{REPO}@{COMMIT}", tmp_path, tmp_path / "cache")
    assert result.returncode == 2
    assert "only pickle weights (pytorch_model.bin)" in result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "provenance.json").exists()


def test_hub_corrupt_download_is_caught_by_its_sha256(tmp_path, fixture_files):
    snapshot = lay_out(tmp_path / "cache", REPO, COMMIT, fixture_files)
    shard = sorted(snapshot.glob("*.safetensors"))[0]
    blob = shard.resolve()
    data = bytearray(blob.read_bytes())
    data[-10] ^= 0xFF  # same size, so only the checksum can tell
    blob.write_bytes(bytes(data))
    result = pull(f"hf://{REPO}@{COMMIT}", tmp_path, tmp_path / "cache")
    assert result.returncode == 2
    assert f"{shard.name} does not match its sha256" in result.stderr
    assert not (tmp_path / "out").exists()


def test_hub_revision_missing_from_cache_says_what_to_check(tmp_path):
    result = pull(f"hf://{REPO}@{COMMIT}", tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("phi-forge: error: hf://microsoft/Phi-3-mini-4k-instruct@")
    assert "Check the repo id" in result.stderr


def test_real_model_recipe_runs_through_the_workflow_from_the_hub_cache(tmp_path, repo_copy, fixture_files):
    """The README's real-model command, with the Hub served from an offline cache laid out at the recipe's pin."""
    lay_out(tmp_path / "cache", REPO, COMMIT, fixture_files)
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "cache")}
    run([SNAKEMAKE, "--cores", "2", "all", "--config", "models=[phi-3-mini-4k-instruct]"], cwd=repo_copy, env=env)
    model = repo_copy / "artifacts" / "phi-3-mini-4k-instruct"
    provenance = read_json(model / "provenance.json")
    assert provenance["kind"] == "hub" and provenance["revision_resolved"] == COMMIT
    ours = read_json(model / "reference" / "reference.json")
    theirs = read_json(ARTIFACTS / "fixture-phi-3-mini-4k" / "reference" / "reference.json")
    assert [p["generated_ids"] for p in ours["prompts"] if p["kind"] == "chat"] == \
           [p["generated_ids"] for p in theirs["prompts"] if p["kind"] == "chat"]
    assert "phi-3-mini-4k-instruct" in (repo_copy / "artifacts" / "summary.md").read_text()
