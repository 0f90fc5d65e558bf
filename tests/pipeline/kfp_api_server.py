"""A small stand-in for the Kubeflow Pipelines REST API (v2beta1) on 127.0.0.1.

It answers the endpoints ``rlhf submit`` and ``rlhf schedule`` reach through the real
``kfp.Client`` and records every request (method, path, query, JSON body or uploaded file), so
tests check what would be sent to a cluster: the uploaded package, the run's parameters, the
schedule's trigger. It keeps pipelines, versions, experiments, runs and recurring runs in memory
the way the API server does (ids, filters by display name, run states), and nothing more.
"""

from __future__ import annotations

import email.parser
import itertools
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlparse

from json_http import JsonHandler, ThreadedServer

API = "/apis/v2beta1"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: Any = None  # parsed JSON, or {"uploadfile": text} for an upload
    headers: dict[str, str] = field(default_factory=dict)  # names in lower case


@dataclass
class State:
    pipelines: dict[str, dict] = field(default_factory=dict)
    versions: dict[str, dict] = field(default_factory=dict)
    experiments: dict[str, dict] = field(default_factory=dict)
    runs: dict[str, dict] = field(default_factory=dict)
    recurring_runs: dict[str, dict] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    # States a run reports on successive GETs; the last one stays.
    run_states: list[str] = field(default_factory=lambda: ["RUNNING", "SUCCEEDED"])
    ids: Any = field(default_factory=lambda: itertools.count(1))

    def new_id(self, kind: str) -> str:
        return f"{kind}-{next(self.ids)}"

    def sent(self, method: str, suffix: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and r.path.endswith(suffix)]


def _display_name_filter(query: dict[str, str]) -> str | None:
    if "filter" not in query:
        return None
    for predicate in json.loads(query["filter"]).get("predicates", []):
        if predicate.get("key") in ("display_name", "name"):
            return predicate.get("string_value", predicate.get("stringValue"))
    return None


def _upload(body: bytes, content_type: str) -> str:
    message = email.parser.BytesParser().parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    for part in message.get_payload():
        if part.get_param("name", header="content-disposition") == "uploadfile":
            return part.get_payload(decode=True).decode("utf-8")
    raise ValueError("no uploadfile part")


class Handler(JsonHandler):
    state: State  # set on the subclass by serve()

    def _handle(self, method: str) -> None:
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        ctype = self.headers.get("Content-Type", "")
        body: Any = None
        if raw and ctype.startswith("multipart/"):
            body = {"uploadfile": _upload(raw, ctype)}
        elif raw:
            body = json.loads(raw)
        headers = {k.lower(): v for k, v in self.headers.items()}
        request = Request(method, url.path, query, body, headers)
        self.state.requests.append(request)
        try:
            status, payload = self._route(request)
        except KeyError as e:
            status, payload = 404, {"error": f"not found: {e}", "code": 5}
        self._reply(status, payload)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _route(self, r: Request) -> tuple[int, Any]:
        s, path = self.state, r.path.removeprefix(API)
        if path == "/healthz":
            return 200, {"multi_user": False}
        if path == "/pipelines" and r.method == "GET":
            name = _display_name_filter(r.query)
            found = [
                p for p in s.pipelines.values()
                if (name is None or p["display_name"] == name)
                and p["namespace"] == r.query.get("namespace", "")
            ]  # fmt: skip
            return 200, {"pipelines": found, "total_size": len(found)} if found else {}
        if path == "/pipelines" and r.method == "POST":
            # CreatePipeline: the pipeline alone, no version (an upload makes one with it). The
            # name falls back to display_name, and is unique within the namespace.
            body = r.body or {}
            name = body.get("display_name") or body.get("name")
            namespace = body.get("namespace", "")
            if not name:
                return 400, {"error": "pipeline name is required", "code": 3}
            if any(
                p["display_name"] == name and p["namespace"] == namespace
                for p in s.pipelines.values()
            ):
                return 409, {"error": f"pipeline {name!r} already exists", "code": 6}
            pid = s.new_id("pipeline")
            s.pipelines[pid] = {"pipeline_id": pid, "display_name": name, "namespace": namespace}
            if body.get("description"):
                s.pipelines[pid]["description"] = body["description"]
            return 200, s.pipelines[pid]
        if path == "/pipelines/upload":
            pid = s.new_id("pipeline")
            s.pipelines[pid] = {"pipeline_id": pid, "display_name": r.query["name"],
                                "namespace": r.query.get("namespace", "")}  # fmt: skip
            self._add_version(pid, r.query["name"], r.body["uploadfile"])
            return 200, s.pipelines[pid]
        if path == "/pipelines/upload_version":
            pid = r.query["pipelineid"]
            s.pipelines[pid]  # noqa: B018 (404 for an unknown pipeline)
            return 200, self._add_version(pid, r.query["name"], r.body["uploadfile"])
        if path.startswith("/pipelines/") and path.endswith("/versions"):
            pid = path.split("/")[2]
            name = _display_name_filter(r.query)
            found = [
                v for v in s.versions.values()
                if v["pipeline_id"] == pid and (name is None or v["display_name"] == name)
            ]  # fmt: skip
            return 200, {"pipeline_versions": found, "total_size": len(found)} if found else {}
        if path == "/experiments" and r.method == "GET":
            name = _display_name_filter(r.query)
            found = [e for e in s.experiments.values() if e["display_name"] == name]
            return 200, {"experiments": found} if found else {}
        if path == "/experiments":
            eid = s.new_id("experiment")
            s.experiments[eid] = {**r.body, "experiment_id": eid}
            return 200, s.experiments[eid]
        if path == "/runs" and r.method == "POST":
            rid = s.new_id("run")
            s.runs[rid] = {**r.body, "run_id": rid, "state": "PENDING", "polls": 0}
            return 200, {k: v for k, v in s.runs[rid].items() if k != "polls"}
        if path.startswith("/runs/"):
            run = s.runs[path.split("/")[2]]
            run["state"] = s.run_states[min(run["polls"], len(s.run_states) - 1)]
            run["polls"] += 1
            return 200, {k: v for k, v in run.items() if k != "polls"}
        if path == "/recurringruns" and r.method == "POST":
            rid = s.new_id("recurring")
            status = "ENABLED" if r.body.get("mode") == "ENABLE" else "DISABLED"
            s.recurring_runs[rid] = {**r.body, "recurring_run_id": rid, "status": status}
            return 200, s.recurring_runs[rid]
        if path == "/recurringruns":
            found = list(s.recurring_runs.values())
            # The API's JSON name for this list is camelCase (json_name in its proto).
            return 200, {"recurringRuns": found, "total_size": len(found)} if found else {}
        if path.startswith("/recurringruns/") and r.method == "DELETE":
            del s.recurring_runs[path.split("/")[2]]
            return 200, {}
        if path.startswith("/recurringruns/") and path.endswith(":disable"):
            recurring = s.recurring_runs[path.split("/")[2].removesuffix(":disable")]
            recurring["status"], recurring["mode"] = "DISABLED", "DISABLE"
            return 200, {}
        return 404, {"error": f"no route for {r.method} {r.path}", "code": 5}

    def _add_version(self, pid: str, name: str, package: str) -> dict:
        vid = self.state.new_id("version")
        self.state.versions[vid] = {
            "pipeline_id": pid, "pipeline_version_id": vid, "display_name": name,
            "package": package,
        }  # fmt: skip
        return {k: v for k, v in self.state.versions[vid].items() if k != "package"}


class KfpApiServer(ThreadedServer):
    """``with KfpApiServer() as server:`` -> ``server.url``, ``server.state``."""

    def __init__(self) -> None:
        super().__init__(Handler, State())
