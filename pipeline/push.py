"""Push a model's artifacts to the Hugging Face Hub, each artifact folder to its own repository, as the model's
manifest.json lists them. Without --yes it only prints the plan.

    python -m pipeline.push artifacts/fixture-phi-3-mini-4k            # the plan: nothing is sent
    python -m pipeline.push artifacts/fixture-phi-3-mini-4k --yes      # push what passed (publish/)
    python -m pipeline.push artifacts/fixture-phi-3-mini-4k --also onnx/cuda/cuda-fp16 --yes   # and a held one

Everything comes from the manifest, which is verified first (one changed file stops the push): the artifacts under
publish/ (those that passed on their own device), the ones named with --also from held/, each one's repository
(<namespace>/<model>-<artifact>: the namespace the cards were written with), and the commit message and the tag,
which carry phi-forge's version, the source's revision and the recipe hash. The tag is
phi-forge-<version>-<revision, 12 hex, or "local">-recipe-<12 hex of `sha256sum <recipe files> | sha256sum`>, the
recipe files being those of the manifest's recipe_sha256. The plan compares each file with the repository's main
branch (LFS files by sha256, the others by git blob id); only new and changed files are committed, so a rerun sends
nothing. The token is huggingface_hub's own (HF_TOKEN, or `hf auth login`) and is never printed.
"""
import argparse
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import httpx2  # huggingface_hub's HTTP client: an unreachable Hub raises its TransportError
from huggingface_hub import CommitOperationAdd, HfApi, RepoFile, get_token
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError

from pipeline.cli import PushError, run_cli
from pipeline.manifest import verify
from pipeline.publish import HELD, PUBLISH, why_held

NEW, CHANGED, UNCHANGED = "new", "changed", "unchanged"


class HubUnreachable(Exception):
    """The Hub could not be asked (offline mode, no network): a dry run counts every file as new."""


@dataclass
class RepoPlan:
    """One artifact's push: its repository, whether the Hub has it (None: not asked), its tag, each file's state."""
    artifact: str
    repo: str
    exists: bool | None
    tagged: bool
    files: list[tuple[str, Path, int, str]]  # path in the repository, local path, size, state

    def uploads(self) -> list[tuple[str, Path, int, str]]:
        return [file for file in self.files if file[3] != UNCHANGED]


def load_manifest(folder: Path) -> dict:
    if not (folder / "manifest.json").is_file():
        raise PushError(f"no manifest.json in {folder}: build it first with `snakemake --cores 4 all`")
    return json.loads((folder / "manifest.json").read_text())


def check_namespace(manifest: dict, namespace: str | None):
    if namespace and namespace != manifest["namespace"]:
        raise PushError(f"--namespace {namespace}: the cards and manifest of {manifest['model']} name "
                        f"{manifest['namespace']}; rebuild them with `snakemake --cores 4 all --config "
                        f"namespace={namespace}`")


def check_files(folder: Path):
    problems = verify(folder)
    if problems:
        raise PushError(f"{len(problems)} file(s) in {folder} do not match its manifest.json, first {problems[0]}; "
                        "nothing pushed: rebuild with `snakemake --cores 4 all --forcerun publish`")


def chosen(manifest: dict, also: list[str]) -> list[str]:
    """The artifacts in publish/, then those named with --also (held: failed, or not run on their own device)."""
    where = {name: (summary["folder"] or "").split("/", 1)[0] for name, summary in manifest["artifacts"].items()}
    published = [name for name, place in where.items() if place == PUBLISH]
    held = [name for name, place in where.items() if place == HELD]
    for name in also:
        if name not in held + published:
            raise PushError(f"--also {name}: not a held artifact of {manifest['model']}; held: "
                            f"{', '.join(held) or 'none'}")
    names = published + [name for name in also if name not in published]
    if not names:
        raise PushError(f"nothing to push for {manifest['model']}: no artifact passed on its own device (see its "
                        f"RELEASE.md); --also names a held one: {', '.join(held) or 'none'}")
    return names


def recipe_hash(manifest: dict) -> str:
    """sha256 of the recipe files' `sha256sum` lines: `sha256sum <recipe files> | sha256sum` in the repository."""
    lines = "".join(f"{digest}  {path}\n" for path, digest in manifest["recipe_sha256"].items())
    return hashlib.sha256(lines.encode()).hexdigest()


def source_revision(manifest: dict) -> str | None:
    return manifest["provenance"].get("revision_resolved")


def tag_name(manifest: dict) -> str:
    revision = (source_revision(manifest) or "local")[:12]
    tag = f"phi-forge-{manifest['phi_forge_version']}-{revision}-recipe-{recipe_hash(manifest)[:12]}"
    return re.sub(r"[^A-Za-z0-9._-]", "-", tag)  # a valid git ref whatever the version string holds


def commit_message(manifest: dict, artifact: str) -> str:
    provenance, summary = manifest["provenance"], manifest["artifacts"][artifact]
    source = provenance.get("recipe_source", provenance.get("source"))
    revision = source_revision(manifest)
    return (f"phi-forge {manifest['phi_forge_version']}: {manifest['model']} {artifact} from {source}"
            + (f"@{revision[:12]}" if revision else " (local)") + f", recipe {recipe_hash(manifest)[:12]}, "
            f"validation {summary['status']}")


def commit_description(manifest: dict, artifact: str) -> str:
    provenance, summary = manifest["provenance"], manifest["artifacts"][artifact]
    revision = source_revision(manifest)
    recipe_files = "".join(f"- {path} {digest}\n" for path, digest in manifest["recipe_sha256"].items())
    not_run = "".join(f"- {item}\n" for item in summary["not_run"])
    return (f"Source: {provenance.get('recipe_source', provenance.get('source'))}"
            + (f" at revision {revision}" if revision else ", a local folder") + "\n"
            + f"Recipe {recipe_hash(manifest)} (sha256 of the recipe files' sha256sum lines):\n{recipe_files}"
            + f"Validation: {summary['status']}" + (f": {summary['reason']}" if summary.get("reason") else "") + "\n"
            + (f"Not run here (what ran in its place is in README.md):\n{not_run}" if not_run else "")
            + f"Made by phi-forge {manifest['phi_forge_version']}; every file's sha256 is in the model's "
            "manifest.json.\n")


def artifact_files(manifest: dict, artifact: str) -> list[tuple[str, dict]]:
    """An artifact's files as the manifest lists them: (path in its repository, {sha256, size})."""
    prefix = manifest["artifacts"][artifact]["folder"] + "/"
    return [(name.removeprefix(prefix), listed) for name, listed in manifest["files"].items()
            if name.startswith(prefix)]


def hub_state(api: HfApi, repo: str) -> tuple[bool, dict[str, RepoFile], set[str]]:
    """Whether the Hub has the repository, its files on main and its tags."""
    try:
        tags = {tag.name for tag in api.list_repo_refs(repo).tags}  # first: it fails fast when offline (no retries)
        files = {entry.path: entry for entry in api.list_repo_tree(repo, recursive=True) if isinstance(entry, RepoFile)}
    except RepositoryNotFoundError:  # or not visible with this token
        return False, {}, set()
    except RevisionNotFoundError:  # created, nothing committed yet
        return True, {}, tags
    except OfflineModeIsEnabled as error:
        raise HubUnreachable("HF_HUB_OFFLINE is set") from error
    except httpx2.TransportError as error:
        raise HubUnreachable(f"{type(error).__name__}: {error}") from error
    return True, files, tags


def git_blob_id(path: Path) -> str:
    """The git object id the Hub lists for a file it keeps in git (not LFS)."""
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def file_state(remote: RepoFile | None, path: Path, sha256: str) -> str:
    if remote is None:
        return NEW
    same = remote.lfs.sha256 == sha256 if remote.lfs else remote.blob_id == git_blob_id(path)
    return UNCHANGED if same else CHANGED


def repo_plan(api: HfApi | None, manifest: dict, folder: Path, artifact: str) -> RepoPlan:
    """What pushing one artifact means; api None: the Hub cannot be asked, every file is new."""
    repo, tag = manifest["artifacts"][artifact]["repo"], tag_name(manifest)
    exists, remote, tags = hub_state(api, repo) if api else (None, {}, set())
    base = folder / manifest["artifacts"][artifact]["folder"]
    files = [(name, base / name, listed["size"], file_state(remote.get(name), base / name, listed["sha256"]))
             for name, listed in artifact_files(manifest, artifact)]
    return RepoPlan(artifact, repo, exists, tag in tags, files)


def plan(api: HfApi, manifest: dict, folder: Path, names: list[str]) -> tuple[list[RepoPlan], str | None]:
    """Each artifact's RepoPlan, and why the Hub could not be asked (None when it could)."""
    try:
        return [repo_plan(api, manifest, folder, name) for name in names], None
    except HubUnreachable as error:
        return [repo_plan(None, manifest, folder, name) for name in names], str(error)


def held_note(summary: dict) -> str:
    return f"  held back ({summary['status']}: {why_held(summary)}); pushed because of --also\n"


def plan_text(manifest: dict, plans: list[RepoPlan], endpoint: str, unreachable: str | None) -> str:
    existence = {True: "on the Hub", False: "new repository", None: "not checked"}
    text = (f"{manifest['model']}: {len(plans)} artifact(s) to {endpoint} under {manifest['namespace']}\n"
            + (f"The Hub cannot be reached ({unreachable}): every file counted as new.\n" if unreachable else ""))
    for repo in plans:
        summary = manifest["artifacts"][repo.artifact]
        text += (f"\n{repo.artifact} -> {repo.repo} ({existence[repo.exists]})\n"
                 + (held_note(summary) if summary["folder"].startswith(HELD) else "")
                 + f"  commit: {commit_message(manifest, repo.artifact)}\n"
                 + f"  tag: {tag_name(manifest)} ({'on the Hub' if repo.tagged else 'new'})\n"
                 + "".join(f"  {state:<9} {size:>13,}  {name}\n" for name, _, size, state in repo.files)
                 + f"  to upload: {len(repo.uploads())} file(s), {sum(f[2] for f in repo.uploads()):,} bytes\n")
    uploads = [file for repo in plans for file in repo.uploads()]
    return text + f"\ntotal: {len(uploads)} file(s), {sum(f[2] for f in uploads):,} bytes to upload\n"


def push(api: HfApi, manifest: dict, repo: RepoPlan, private: bool):
    """Create the repository if it is new, commit the new and changed files, tag: each only where needed."""
    if not repo.exists:
        api.create_repo(repo.repo, private=private, exist_ok=True)
    commit = None
    if repo.uploads():
        operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=path) for name, path, _, _ in
                      repo.uploads()]
        commit = api.create_commit(repo.repo, operations, commit_message=commit_message(manifest, repo.artifact),
                                   commit_description=commit_description(manifest, repo.artifact))
        print(f"{repo.repo}: committed {len(operations)} file(s), {commit.oid}")
    if not repo.tagged:
        api.create_tag(repo.repo, tag=tag_name(manifest), revision=commit.oid if commit else None,
                       tag_message=commit_message(manifest, repo.artifact), exist_ok=True)
        print(f"{repo.repo}: tagged {tag_name(manifest)}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a model's folder, artifacts/<model>, with its manifest.json")
    parser.add_argument("--also", action="append", default=[], metavar="ARTIFACT",
                        help="push a held artifact too (failed, or validated on a stand-in for CUDA or DirectML), "
                             "e.g. onnx/cuda/cuda-fp16; repeatable")
    parser.add_argument("--namespace", help="refuse unless it is the namespace the cards were written with")
    parser.add_argument("--private", action="store_true", help="create new repositories private")
    parser.add_argument("--yes", action="store_true", help="push; without it only the plan is printed")
    args = parser.parse_args(argv)
    manifest = load_manifest(args.folder)
    check_namespace(manifest, args.namespace)
    names = chosen(manifest, args.also)
    check_files(args.folder)
    if args.yes and not get_token():
        raise PushError("no Hugging Face token: set HF_TOKEN or run `hf auth login`; nothing pushed")
    api = HfApi()
    try:
        plans, unreachable = plan(api, manifest, args.folder, names)
        print(plan_text(manifest, plans, api.endpoint, unreachable), end="")
        if not args.yes:
            print("Dry run: nothing was sent; --yes pushes.")
            return
        if unreachable:
            raise PushError(f"the Hub at {api.endpoint} cannot be reached ({unreachable}); nothing pushed")
        for repo in plans:
            push(api, manifest, repo, args.private)
    except (HfHubHTTPError, httpx2.TransportError) as error:  # a refused token, a lost connection: one line
        first_line = str(error).splitlines()[0]
        raise PushError(f"{first_line} (a rerun resumes: what the Hub has is not sent again)") from error


if __name__ == "__main__":
    run_cli(main)
