"""A stand-in for the Hugging Face Hub's HTTP API, as much of it as huggingface_hub 2.4 calls for create_repo,
list_repo_refs, list_repo_tree, create_commit (README metadata check, preupload, LFS batch and PUT, the commit) and
create_tag; it records every request. Give it to the client as HF_ENDPOINT.

It speaks no Xet, and huggingface_hub 2.4 sends LFS files through Xet whenever hf_xet is installed, without asking
the server: run the client with HF_HUB_DISABLE_XET=1 to exercise the LFS protocol instead.
"""
import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

REPO = r"(?P<repo>[^/]+/[^/]+?)"


@dataclass
class Request:
    method: str
    path: str  # without the query
    headers: dict[str, str]  # names in lower case
    body: bytes

    def json(self):
        return json.loads(self.body)


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Hub:
    """Repositories in memory, each with its files on main (as the tree API lists them), tags and LFS objects."""

    def __init__(self):
        self.requests: list[Request] = []
        self.repos: dict[str, dict] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.routes = [("POST", r"/api/repos/create", self.create), ("GET", rf"/api/models/{REPO}/refs", self.refs),
                       ("GET", rf"/api/models/{REPO}/tree/main", self.tree),
                       ("POST", r"/api/validate-yaml", lambda request: (200, {})),
                       ("POST", rf"/api/models/{REPO}/preupload/main", self.preupload),
                       ("POST", rf"/{REPO}\.git/info/lfs/objects/batch", self.batch),
                       ("PUT", rf"/lfs/{REPO}/(?P<oid>[0-9a-f]{{64}})", self.put),
                       ("POST", rf"/api/models/{REPO}/commit/main", self.commit),
                       ("POST", rf"/api/models/{REPO}/tag/(?P<revision>[^/]+)", self.tag)]

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def answer(self, request: Request) -> tuple[int, object]:
        for method, pattern, action in self.routes:
            match = re.fullmatch(pattern, request.path)
            if method == request.method and match:
                if match.groupdict().get("repo") not in (None, *self.repos):
                    return 404, {"error": "Repository not found"}
                return action(request, **match.groupdict())
        return 501, {"error": f"not served by the stand-in: {request.method} {request.path}"}

    def create(self, request):
        repo = f"{request.json()['organization']}/{request.json()['name']}"
        if repo in self.repos:
            return 409, {"error": "You already created this model repo"}
        self.repos[repo] = {"files": {}, "tags": {}, "objects": {}, "head": "0" * 40}
        return 200, {"url": f"{self.url}/{repo}"}

    def refs(self, request, repo):
        def ref(name, kind, commit):
            return {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": commit}
        tags = [ref(name, "tags", commit) for name, commit in self.repos[repo]["tags"].items()]
        return 200, {"branches": [ref("main", "heads", self.repos[repo]["head"])], "converts": [], "tags": tags}

    def tree(self, request, repo):
        return 200, list(self.repos[repo]["files"].values())

    def preupload(self, request, repo):
        def mode(file):  # as the Hub decides: binary content goes to LFS
            return "lfs" if b"\0" in base64.b64decode(file["sample"]) else "regular"
        return 200, {"files": [{"path": file["path"], "uploadMode": mode(file), "shouldIgnore": False}
                               for file in request.json()["files"]]}

    def batch(self, request, repo):
        def action(obj):
            missing = obj["oid"] not in self.repos[repo]["objects"]
            return {"upload": {"href": f"{self.url}/lfs/{repo}/{obj['oid']}"}} if missing else None
        objects = [{"oid": o["oid"], "size": o["size"], "actions": action(o)} for o in request.json()["objects"]]
        return 200, {"transfer": "basic", "objects": [{k: v for k, v in obj.items() if v} for obj in objects]}

    def put(self, request, repo, oid):
        if hashlib.sha256(request.body).hexdigest() != oid:
            return 400, {"error": "sha256 mismatch"}
        self.repos[repo]["objects"][oid] = request.body
        return 200, {}

    def commit(self, request, repo):
        files = self.repos[repo]["files"]
        for line in request.body.splitlines()[1:]:
            operation = json.loads(line)["value"]
            if "content" in operation:
                data = base64.b64decode(operation["content"])
                files[operation["path"]] = {"type": "file", "path": operation["path"], "size": len(data),
                                            "oid": git_blob_id(data)}
            elif operation["oid"] in self.repos[repo]["objects"]:
                pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{operation['oid']}\n"
                files[operation["path"]] = {"type": "file", "path": operation["path"], "size": operation["size"],
                                            "oid": git_blob_id(pointer.encode()),
                                            "lfs": {"oid": operation["oid"], "size": operation["size"],
                                                    "pointerSize": len(pointer)}}
            else:
                return 422, {"error": f"LFS object of {operation['path']} was not uploaded"}
        self.repos[repo]["head"] = hashlib.sha1(request.body).hexdigest()
        return 200, {"commitUrl": f"{self.url}/{repo}/commit/{self.repos[repo]['head']}",
                     "commitOid": self.repos[repo]["head"]}

    def tag(self, request, repo, revision):
        tags = self.repos[repo]["tags"]
        if request.json()["tag"] in tags:
            return 409, {"error": "Tag already exists"}
        tags[request.json()["tag"]] = self.repos[repo]["head"] if revision == "main" else revision
        return 200, {}


def handler(hub: Hub):
    class Handler(BaseHTTPRequestHandler):
        def do(self):
            length = int(self.headers.get("Content-Length", 0))
            request = Request(self.command, urlsplit(self.path).path,
                              {name.lower(): value for name, value in self.headers.items()}, self.rfile.read(length))
            hub.requests.append(request)
            status, payload = hub.answer(request)
            body = json.dumps(payload).encode()
            self.send_response(status)
            if status == 404:
                self.send_header("X-Error-Code", "RepoNotFound")  # what huggingface_hub reads as RepositoryNotFound
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do

        def log_message(self, *args):
            pass

    return Handler
