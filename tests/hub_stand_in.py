"""A local stand-in for the Hugging Face Hub's HTTP API: enough for huggingface_hub to create a repository, push
folders to it in commits (files sent inline, as the hub's "regular" upload mode) and download files back.

Tests point ``HF_ENDPOINT`` (or ``HfApi(endpoint=...)``) at it; nothing reaches the network. It records
every request, keeps each repository's files per revision, and can be told to refuse commits.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def card_errors(content: str) -> list[str]:
    """What the hub's metadata check would refuse in a README.md: YAML that does not parse, a model-index
    without the fields its widget needs (task.type, dataset.name / type, metrics' type and numeric value)."""
    import yaml

    match = re.match(r"^---\s*\n(.*?)\n---\s*\n", content, re.S)
    if not match:
        return []
    try:
        meta = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as err:
        return [f"YAML: {err}"]
    errors = []
    for i, model in enumerate(meta.get("model-index") or []):
        if not model.get("name"):
            errors.append(f"model-index[{i}].name is missing")
        for j, result in enumerate(model.get("results") or []):
            where = f"model-index[{i}].results[{j}]"
            if not (result.get("task") or {}).get("type"):
                errors.append(f"{where}.task.type is missing")
            dataset = result.get("dataset") or {}
            if not dataset.get("name") or not dataset.get("type"):
                errors.append(f"{where}.dataset needs name and type")
            for k, metric in enumerate(result.get("metrics") or []):
                if not metric.get("type") or not isinstance(metric.get("value"), (int, float)):
                    errors.append(f"{where}.metrics[{k}] needs a type and a numeric value")
    return errors


class HubStandIn:
    def __init__(self):
        self.repos: dict[str, dict] = {}  # repo_id -> {"private": bool, "files": {revision: {path: bytes}}}
        self.commits: list[dict] = []  # {"repo_id", "revision", "summary", "files"}
        self.requests: list[tuple[str, str]] = []
        self.refuse_commits_with: int | None = None  # an HTTP status to answer commits with
        self.validated: list[str] = []  # README.md contents sent to /api/validate-yaml
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "HubStandIn":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        return self.repos[repo_id]["files"].get(revision, {})

    def add_file(self, repo_id: str, path: str, content: bytes, revision: str = "main") -> None:
        repo = self.repos.setdefault(repo_id, {"private": False, "files": {}})
        repo["files"].setdefault(revision, {})[path] = content

    # ----------------------------------------------------------------- the API

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, body=None, headers: dict | None = None, raw: bytes | None = None):
                data = raw if raw is not None else json.dumps(body if body is not None else {}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if raw is None else "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def do_POST(self):
                hub.requests.append(("POST", self.path))
                path = self.path.split("?")[0]
                body = self._body()
                if path == "/api/validate-yaml":
                    content = json.loads(body)["content"]
                    hub.validated.append(content)
                    errors = card_errors(content)
                    return self._send(400 if errors else 200, {"errors": [{"message": e} for e in errors],
                                                               "warnings": []})
                if path == "/api/repos/create":
                    payload = json.loads(body)
                    repo_id = f"{payload.get('organization') or 'user'}/{payload['name']}"
                    if repo_id in hub.repos:
                        return self._send(409, {"error": "You already created this model repo", "url": repo_id})
                    private = payload.get("visibility") == "private" or bool(payload.get("private"))
                    hub.repos[repo_id] = {"private": private, "files": {"main": {}}}
                    return self._send(200, {"url": f"{hub.endpoint}/{repo_id}", "name": repo_id})
                match = re.match(r"^/api/models/(.+?)/(preupload|commit|branch)/(.+)$", path)
                if not match or match.group(1) not in hub.repos:
                    return self._send(404, {"error": f"Repository not found: {path}"})
                repo_id, action, revision = match.group(1), match.group(2), match.group(3)
                revision = revision.replace("%2F", "/")
                if action == "branch":
                    files = hub.repos[repo_id]["files"]
                    files.setdefault(revision, dict(files.get("main", {})))
                    return self._send(200, {})
                if action == "preupload":
                    wanted = json.loads(body)["files"]
                    return self._send(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                                      for f in wanted], "commitOid": "0" * 40})
                if hub.refuse_commits_with:
                    return self._send(hub.refuse_commits_with, {"error": "refused by the stand-in"})
                lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
                header = next(line["value"] for line in lines if line["key"] == "header")
                added = {}
                for line in lines:
                    if line["key"] == "file":
                        value = line["value"]
                        added[value["path"]] = base64.b64decode(value["content"])
                if revision not in hub.repos[repo_id]["files"]:
                    return self._send(404, {"error": f"Revision not found: {revision}"})
                hub.repos[repo_id]["files"][revision].update(added)
                oid = hashlib.sha1(json.dumps(sorted(added)).encode() + str(len(hub.commits)).encode()).hexdigest()
                hub.commits.append({"repo_id": repo_id, "revision": revision, "summary": header.get("summary"),
                                    "files": sorted(added)})
                return self._send(200, {"commitUrl": f"{hub.endpoint}/{repo_id}/commit/{oid}", "commitOid": oid,
                                        "pullRequestUrl": None})

            def do_GET(self):
                hub.requests.append((self.command, self.path))
                match = re.match(r"^/(?:api/)?(?:models/)?(.+?)/resolve/([^/]+)/(.+)$", self.path.split("?")[0])
                if not match or match.group(1) not in hub.repos:
                    return self._send(404, {"error": "not found"}, headers={"X-Error-Code": "RepoNotFound"})
                repo_id, revision, name = match.groups()
                content = hub.files(repo_id, revision).get(name)
                if content is None:
                    return self._send(404, {"error": "not found"}, headers={"X-Error-Code": "EntryNotFound"})
                etag = hashlib.sha256(content).hexdigest()
                return self._send(200, raw=content, headers={"ETag": f'"{etag}"', "X-Repo-Commit": "1" * 40})

            do_HEAD = do_GET

        return Handler
