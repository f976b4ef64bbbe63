"""The Hub push (pipeline.push): its plan and its refusals offline, and what huggingface_hub sends for it to a local
stand-in for the Hub (tests/hubserver.py), pushed twice: the second push sends nothing, and the token is nowhere."""
import base64
import hashlib
import json
import re
import secrets
import subprocess

import pytest

from conftest import ARTIFACTS, SNAKEMAKE, read_json, run
from hubserver import Hub
from pipeline import push as push_module

PYTHON = SNAKEMAKE.parent / "python"  # the workflow environment, where huggingface_hub is
MODEL = "fixture-phi-3-mini-4k"  # its CUDA and DirectML artifacts are held, the rest published
PUSHED = "fixture-phi-3-medium-4k"  # the smallest publish/ (7 artifacts, 10 MB): the one pushed to the stand-in
HELD_CUDA = "onnx/cuda/cuda-fp16"


def model_copy(tmp_path, model: str):
    """The model's manifest and publish gate, hard-linked: a test replaces a file there, never edits one."""
    folder = tmp_path / model
    folder.mkdir()
    for name in ("manifest.json", "publish", "held"):
        subprocess.run(["cp", "-al", ARTIFACTS / model / name, folder / name], check=True)
    return folder


def push(folder, *args, env, check=True):
    return run([PYTHON, "-m", "pipeline.push", folder, *args], env=env, check=check)


def offline(tmp_path) -> dict:
    return {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home"), "HF_TOKEN": ""}


def planned(stdout: str) -> dict[str, dict[str, tuple[int, str]]]:
    """The plan's repositories, each with its files: {repo: {path: (size, state)}}."""
    repos, files = {}, None
    for line in stdout.splitlines():
        if " -> " in line and not line.startswith(" "):
            files = repos.setdefault(line.split(" -> ")[1].split(" ")[0], {})
        elif re.match(r"  (new|changed|unchanged) ", line):
            state, size, path = line.split(maxsplit=2)
            files[path] = (int(size.replace(",", "")), state)
    return repos


def manifest_files(manifest: dict, artifact: str) -> dict[str, dict]:
    """An artifact's files as its manifest lists them, by path in its repository."""
    prefix = manifest["artifacts"][artifact]["folder"] + "/"
    return {name.removeprefix(prefix): f for name, f in manifest["files"].items() if name.startswith(prefix)}


def published(manifest: dict) -> list[str]:
    return [name for name, a in manifest["artifacts"].items() if (a["folder"] or "").startswith("publish/")]


def recipe_hash(manifest: dict) -> str:
    """`sha256sum recipes/models/<model>.yaml recipes/targets.yaml | sha256sum`, from the manifest's hashes."""
    sums = "".join(f"{digest}  {path}\n" for path, digest in manifest["recipe_sha256"].items())
    return hashlib.sha256(sums.encode()).hexdigest()


@pytest.mark.parametrize("also", [[], [HELD_CUDA]], ids=["published", "and a held CUDA one"])
def test_the_plan_lists_what_passed_with_the_manifests_files(pipeline_run, tmp_path, also):
    manifest = read_json(ARTIFACTS / MODEL / "manifest.json")
    result = push(ARTIFACTS / MODEL, *[arg for name in also for arg in ("--also", name)], env=offline(tmp_path))
    names = published(manifest) + also
    assert planned(result.stdout) == {manifest["artifacts"][name]["repo"]: {
        path: (f["size"], "new") for path, f in manifest_files(manifest, name).items()} for name in names}
    held_gpu = [repo for repo in planned(result.stdout) if "-onnx-cuda-" in repo or "-onnx-directml-" in repo]
    assert len(held_gpu) == len(also)
    assert "The Hub cannot be reached (HF_HUB_OFFLINE is set): every file counted as new." in result.stdout
    assert result.stdout.endswith("Dry run: nothing was sent; --yes pushes.\n")
    if also:  # said in the plan, and in the card that goes with it
        assert "held back (passed: the CUDA execution provider (NVIDIA GPU): not run here; in its place" \
            in result.stdout
        card = (ARTIFACTS / MODEL / "held" / HELD_CUDA / "README.md").read_text()
        assert "Not run here:" in card and "in its place: onnxruntime-genai's CPU provider" in card


def replace_a_card(folder):
    card = folder / "publish" / "gguf" / "Q4_K_M" / "README.md"
    text = card.read_text()
    card.unlink()  # a hard link to the main run's file: replaced, not edited
    card.write_text(text + "\nedited after the run\n")


REFUSALS = {
    "a changed file": (replace_a_card, [], {}, "1 file(s) in {folder} do not match its manifest.json, first "
                       "publish/gguf/Q4_K_M/README.md: changed since the manifest was written"),
    "an unknown --also": (None, ["--also", "gguf/Q9_9"], {}, f"--also gguf/Q9_9: not a held artifact of {MODEL}; "
                          "held: onnx/cuda/cuda-int4-rtn-block-32, onnx/cuda/cuda-fp16, "),
    "another namespace": (None, ["--namespace", "other-org"], {}, "rebuild them with `snakemake --cores 4 all "
                          "--config namespace=other-org`"),
    "--yes without a token": (None, ["--yes"], {"HF_TOKEN": ""}, "no Hugging Face token: set HF_TOKEN or run "
                              "`hf auth login`; nothing pushed"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_a_refused_push_says_why_in_one_line_and_sends_nothing(pipeline_run, tmp_path, case):
    change, args, env, message = REFUSALS[case]
    folder = model_copy(tmp_path, MODEL)
    if change:
        change(folder)
    with Hub() as hub:
        result = push(folder, *args, "--yes", check=False,
                      env={"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf-home"), "HF_TOKEN": "hf_x", **env})
    assert result.returncode == 2, result.stdout + result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("phi-forge: error: ") and message.format(folder=folder) in line
    assert hub.requests == [] and result.stdout == ""


def test_tag_and_commit_message_name_a_hub_sources_revision(pipeline_run):
    manifest = read_json(ARTIFACTS / MODEL / "manifest.json")
    revision = "0123456789abcdef0123456789abcdef01234567"
    manifest["provenance"] = {"kind": "hub", "recipe_source": "microsoft/Phi-3.5-mini-instruct",
                              "revision_resolved": revision}
    short = recipe_hash(manifest)[:12]
    assert push_module.tag_name(manifest) == f"phi-forge-{manifest['phi_forge_version']}-0123456789ab-recipe-{short}"
    assert f"from microsoft/Phi-3.5-mini-instruct@0123456789ab, recipe {short}, validation passed" \
        in push_module.commit_message(manifest, "gguf/Q4_K_M")
    assert f"at revision {revision}" in push_module.commit_description(manifest, "gguf/Q4_K_M")


def commits_sent(requests) -> dict[str, list[list[dict]]]:
    """Each commit huggingface_hub sent, by repository: its ndjson lines, the header first."""
    sent = {}
    for request in requests:
        if match := re.fullmatch(r"/api/models/(.+)/commit/main", request.path):
            sent.setdefault(match[1], []).append([json.loads(line) for line in request.body.splitlines()])
    return sent


def lfs_uploads(requests) -> dict[str, set[str]]:
    """The sha256 of each LFS object uploaded, by repository, each checked against the bytes sent."""
    uploads = {}
    for request in requests:
        if request.method == "PUT":
            repo, oid = re.fullmatch(r"/lfs/(.+)/([0-9a-f]{64})", request.path).groups()
            assert hashlib.sha256(request.body).hexdigest() == oid
            uploads.setdefault(repo, set()).add(oid)
    return uploads


def sent_sha256(operation: dict) -> str:
    """The sha256 of a committed file: an LFS file's oid, a regular file's content's."""
    value = operation["value"]
    if operation["key"] == "lfsFile":
        return value["oid"]
    return hashlib.sha256(base64.b64decode(value["content"])).hexdigest()


def test_a_push_sends_the_manifests_files_once_and_never_the_token(pipeline_run, tmp_path):
    folder = model_copy(tmp_path, PUSHED)
    manifest = read_json(folder / "manifest.json")
    repos = {manifest["artifacts"][name]["repo"]: name for name in published(manifest)}
    token = f"hf_{secrets.token_hex(20)}"
    env = {"HF_TOKEN": token, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_DISABLE_XET": "1",  # see hubserver.py
           "HF_DEBUG": "1"}  # huggingface_hub's own debug log, every request in it, must not carry the token either
    with Hub() as hub:
        env["HF_ENDPOINT"] = hub.url
        dry_run = push(folder, env=env)
        assert {request.method for request in hub.requests} == {"GET"} and not hub.repos
        first = push(folder, "--yes", env=env)
        sent = hub.requests[:]
        second = push(folder, "--yes", env=env)
        resent = hub.requests[len(sent):]
    created = [f"{r.json()['organization']}/{r.json()['name']}" for r in sent if r.path == "/api/repos/create"]
    assert sorted(created) == sorted(repos)
    commits, uploads, short = commits_sent(sent), lfs_uploads(sent), recipe_hash(manifest)[:12]
    assert {repo: len(sent_commits) for repo, sent_commits in commits.items()} == {repo: 1 for repo in repos}
    for repo, name in repos.items():
        [[header, *operations]] = commits[repo]
        files = manifest_files(manifest, name)
        assert {operation["value"]["path"]: sent_sha256(operation) for operation in operations} \
            == {path: f["sha256"] for path, f in files.items()}
        assert uploads.get(repo, set()) == {op["value"]["oid"] for op in operations if op["key"] == "lfsFile"}
        assert header["value"]["summary"] == (f"phi-forge {manifest['phi_forge_version']}: {PUSHED} {name} from "
                                              f"fixture://phi3-medium-4k (local), recipe {short}, validation passed")
        assert recipe_hash(manifest) in header["value"]["description"]
        assert [r.json()["tag"] for r in sent if r.path == f"/api/models/{repo}/tag/{commit_oid(first, repo)}"] \
            == [f"phi-forge-{manifest['phi_forge_version']}-local-recipe-{short}"]
    calls = [r for r in sent if r.path != "/api/agent-harnesses"]  # that one: huggingface_hub's own telemetry
    assert all(r.headers.get("authorization") == f"Bearer {token}" for r in calls if r.method != "PUT")
    assert not any("authorization" in r.headers for r in calls if r.method == "PUT")  # the storage's URL, no token
    assert {request.method for request in resent} == {"GET"}  # the rerun: nothing created, uploaded or tagged
    assert "total: 0 file(s), 0 bytes to upload" in second.stdout and "(new)" not in second.stdout
    printed = "".join(result.stdout + result.stderr for result in (dry_run, first, second))
    assert "<TOKEN>" in printed and token not in printed  # the debug log ran, and hid the token
    assert [path for path in tmp_path.rglob("*") if path.is_file() and token.encode() in path.read_bytes()] == []


def commit_oid(result, repo: str) -> str:
    return re.search(rf"^{re.escape(repo)}: committed \d+ file\(s\), ([0-9a-f]{{40}})$", result.stdout, re.M)[1]
