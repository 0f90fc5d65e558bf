"""The deploy stage's roll-out through the real ``kubernetes`` client against a Kubernetes API
server started here (InferenceServices scripted as KServe's controller would act), with the
smoke request answered by a completion server on 127.0.0.1: created and ready, an update of the
previous champion, not ready or not answering (rolled back, the reason in the error), timeout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from json_http import JsonHandler, ThreadedServer
from k8s_api_server import K8sApiServer
from kubernetes import client

from rlhf.pipeline.inferenceservice import Predictor, inferenceservice_manifest
from rlhf.pipeline.rollout import (
    PREVIOUS_SPEC,
    DeployFailed,
    DeployTimeout,
    SmokeRequest,
    merge_patch,
    roll_out,
    terminal_failure,
)

SRC = str(Path(__file__).resolve().parents[2] / "src")
NS = "team-a"
NAME = "rlhf-policy"
OLD = "s3://rlhf/runs/run-1/policy"
NEW = "s3://rlhf/runs/run-2/policy"


class CompletionHandler(JsonHandler):
    """KServe's Hugging Face runtime's /openai/v1/completions, as far as the smoke request
    needs it; ``state.status`` other than 200 answers an error."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.state.requests.append((self.path, body))
        if self.state.status != 200:
            return self._reply(self.state.status, {"error": "model failed to load"})
        text = f" answer to {body['prompt']}"
        self._reply(200, {"id": "cmpl-1", "object": "text_completion", "model": body["model"],
                          "choices": [{"index": 0, "text": text, "finish_reason": "length"}]})  # fmt: skip


class CompletionState:
    def __init__(self) -> None:
        self.requests: list = []
        self.status = 200


@pytest.fixture
def k8s():
    with K8sApiServer() as server:
        yield server


@pytest.fixture
def model_server():
    with ThreadedServer(CompletionHandler, CompletionState()) as server:
        yield server


def _manifest(uri=NEW, run="run-2", gpus=1):
    return inferenceservice_manifest(name=NAME, namespace=NS, storage_uri=uri, run_id=run,
                                     predictor=Predictor(service_account="rlhf-serving",
                                                         gpus=gpus, memory_limit="24Gi"))  # fmt: skip


def _roll_out(server, manifest, smoke, timeout=10.0):
    lines: list[str] = []
    api = client.ApiClient(client.Configuration(host=server.url))
    try:
        return roll_out(manifest, api, timeout, smoke, log=lines.append, poll_seconds=0.05), lines
    except BaseException:
        print("\n".join(lines))
        raise


def _smoke(model_server):
    return SmokeRequest(prompt="How do I boil an egg?", max_tokens=8, url=model_server.url)


def _uri(obj):
    return obj["spec"]["predictor"]["model"]["storageUri"]


def test_created_then_ready_then_the_smoke_request_is_answered(k8s, model_server):
    k8s.state.script_changes(NAME, [("progress",), ("sleep", 0.2), ("ready", model_server.url)])
    result, lines = _roll_out(k8s, _manifest(), SmokeRequest(prompt="How do I boil an egg?"))
    assert result.created and result.name == NAME and result.namespace == NS
    assert result.url == model_server.url  # status.address.url: the cluster-local address
    assert result.completion == " answer to How do I boil an egg?"
    assert result.ready_seconds >= 0.2
    (post,) = k8s.state.sent("POST", "inferenceservices")
    assert post.body == _manifest()
    assert k8s.state.sent("GET", "inferenceservices")  # read first: nothing to roll back to
    ((path, body),) = model_server.state.requests
    assert path == "/openai/v1/completions"
    assert body == {"model": NAME, "prompt": "How do I boil an egg?", "max_tokens": 16}
    assert any("Ready=Unknown Progressing" in line for line in lines)
    assert any("smoke request answered" in line for line in lines)


def test_the_api_server_unavailable_for_a_while_is_waited_out(k8s, model_server):
    k8s.state.script_changes(NAME, [("progress",), ("sleep", 0.3), ("ready", model_server.url)])
    k8s.state.unavailable_gets = 3  # the GETs after the create, while it is in progress
    result, lines = _roll_out(k8s, _manifest(), _smoke(model_server))
    assert result.completion and k8s.state.unavailable_gets == 0
    assert sum("the API did not answer" in line for line in lines) >= 1


def test_an_existing_champion_is_updated_and_its_spec_kept(k8s, model_server):
    old = _manifest(OLD, "run-1", gpus=2)
    old["metadata"]["annotations"] = {"team": "nlp"}
    k8s.state.add_service(old, model_server.url)
    k8s.state.script_changes(NAME, [("sleep", 0.1), ("ready", model_server.url)])
    result, lines = _roll_out(k8s, _manifest(), _smoke(model_server))
    assert not result.created and result.completion
    assert not k8s.state.sent("POST", "inferenceservices")
    (patch,) = k8s.state.sent("PATCH", "inferenceservices")
    # A merge patch that drops what the new spec leaves out... here nothing, and changes the rest.
    assert patch.body["spec"]["predictor"]["model"]["storageUri"] == NEW
    now = k8s.state.service(NS, NAME)
    assert now["spec"] == _manifest()["spec"] and now["metadata"]["generation"] == 2
    assert now["metadata"]["labels"]["rlhf/run"] == "run-2"
    assert now["metadata"]["annotations"]["team"] == "nlp"
    assert json.loads(now["metadata"]["annotations"][PREVIOUS_SPEC]) == old["spec"]
    assert any(f"updated from storageUri {OLD} to {NEW}" in line for line in lines)


def test_the_old_specs_ready_does_not_count_for_the_new_one(k8s, model_server):
    """Until KServe has seen the new generation, the old spec's Ready=True still shows: the
    wait must not take it for the new one's."""
    k8s.state.add_service(_manifest(OLD, "run-1"), model_server.url)
    k8s.state.script_changes(NAME, [("sleep", 0.5), ("not_ready", "RevisionFailed", "OOMKilled")],
                             [("ready", model_server.url)])  # fmt: skip
    with pytest.raises(DeployFailed, match="RevisionFailed: OOMKilled"):
        _roll_out(k8s, _manifest(), _smoke(model_server))


def test_not_ready_rolls_back_to_the_previous_spec_with_the_reason(k8s, model_server):
    old = _manifest(OLD, "run-1")
    k8s.state.add_service(old, model_server.url)
    k8s.state.script_changes(
        NAME,
        [("not_ready", "RevisionFailed", "Container storage-initializer: 403 Forbidden")],
        [("ready", model_server.url)],  # the rollback: the previous spec serves again
    )
    with pytest.raises(DeployFailed) as failed:
        _roll_out(k8s, _manifest(), _smoke(model_server))
    message = str(failed.value)
    assert f"InferenceService {NS}/{NAME} is not ready: RevisionFailed: " in message
    assert "403 Forbidden" in message
    assert f"rolled back to the previous spec (generation 1, storageUri {OLD})" in message
    now = k8s.state.service(NS, NAME)
    assert now["spec"] == old["spec"] and now["metadata"]["generation"] == 3
    assert now["metadata"]["labels"] == old["metadata"]["labels"]
    assert PREVIOUS_SPEC not in (now["metadata"].get("annotations") or {})
    assert len(k8s.state.sent("PATCH", "inferenceservices")) == 2
    assert not model_server.state.requests  # never sent to a service that is not ready


def test_a_rollback_the_api_refuses_reports_both_reasons(k8s, model_server):
    k8s.state.add_service(_manifest(OLD, "run-1"), model_server.url)
    k8s.state.script_changes(NAME, [("not_ready", "RevisionFailed", "OOMKilled")])
    k8s.state.patch_answers = [0, 403]  # the update goes through, the rollback does not
    with pytest.raises(DeployFailed) as failed:
        _roll_out(k8s, _manifest(), _smoke(model_server))
    message = str(failed.value)
    assert "RevisionFailed: OOMKilled; the rollback failed too: " in message
    assert "the API refused the rollback: " in message and "forbidden" in message
    assert _uri(k8s.state.service(NS, NAME)) == NEW  # what a person restores by hand


def test_a_failing_smoke_request_rolls_back(k8s, model_server):
    old = _manifest(OLD, "run-1")
    k8s.state.add_service(old, model_server.url)
    k8s.state.script_changes(NAME, [("ready", model_server.url)], [("ready", model_server.url)])
    model_server.state.status = 500
    with pytest.raises(DeployFailed) as failed:
        _roll_out(k8s, _manifest(), _smoke(model_server))
    message = str(failed.value)
    assert f"smoke request to {model_server.url}/openai/v1/completions: HTTP 500" in message
    assert "model failed to load" in message and "rolled back to the previous spec" in message
    assert _uri(k8s.state.service(NS, NAME)) == OLD


def test_a_smoke_answer_that_is_no_completion_fails(k8s, model_server):
    k8s.state.script_changes(NAME, [("ready", model_server.url)])

    class NotCompletion(CompletionHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self._reply(200, {"predictions": [1]})

    with ThreadedServer(NotCompletion, CompletionState()) as other:
        smoke = SmokeRequest(prompt="hi", url=other.url)
        with pytest.raises(DeployFailed, match="not a completion \\(KeyError.*predictions"):
            _roll_out(k8s, _manifest(), smoke)


def test_a_first_deployment_that_fails_is_left_for_inspection(k8s, model_server):
    k8s.state.script_changes(NAME, [("not_ready", "RevisionFailed", "no GPU node")])
    with pytest.raises(DeployFailed, match="no GPU node; there was no previous InferenceService"):
        _roll_out(k8s, _manifest(), _smoke(model_server))
    assert _uri(k8s.state.service(NS, NAME)) == NEW
    assert not k8s.state.sent("PATCH") and not k8s.state.sent("DELETE")


def test_a_transient_not_ready_while_the_new_revision_comes_up_is_waited_out(k8s, model_server):
    """RawDeployment reports Ready=False MinimumReplicasUnavailable until the new pods are
    available, Serverless RevisionMissing until a revision is ready: progress, not failure."""
    k8s.state.add_service(_manifest(OLD, "run-1"), model_server.url)
    k8s.state.script_changes(NAME, [
        ("not_ready", "MinimumReplicasUnavailable", "Deployment does not have minimum availability."),
        ("sleep", 0.3), ("not_ready", "RevisionMissing", "Configuration does not have any ready Revision"),
        ("sleep", 0.3), ("ready", model_server.url),
    ])  # fmt: skip
    result, lines = _roll_out(k8s, _manifest(), _smoke(model_server))
    assert result.completion and result.ready_seconds >= 0.6
    assert _uri(k8s.state.service(NS, NAME)) == NEW
    assert len(k8s.state.sent("PATCH", "inferenceservices")) == 1  # no rollback
    assert any("Ready=False MinimumReplicasUnavailable" in line for line in lines)


def test_a_model_that_fails_to_load_fails_at_once_with_kserves_reason(k8s, model_server):
    """KServe's modelStatus says BlockedByFailedLoad (ModelLoadFailed, the container's message)
    while Ready=False carries a reason that alone would be waited on."""
    k8s.state.add_service(_manifest(OLD, "run-1"), model_server.url)
    k8s.state.script_changes(
        NAME, [("failed_load", "storage-initializer: 403 Forbidden")], [("ready", model_server.url)]
    )
    with pytest.raises(DeployFailed) as failed:
        _roll_out(k8s, _manifest(), _smoke(model_server), timeout=30.0)
    message = str(failed.value)
    assert "is not ready: BlockedByFailedLoad: ModelLoadFailed: storage-initializer: 403" in message
    assert "rolled back to the previous spec" in message
    assert _uri(k8s.state.service(NS, NAME)) == OLD


def test_a_not_ready_that_lasts_until_the_deadline_fails_naming_it(k8s, model_server):
    k8s.state.add_service(_manifest(OLD, "run-1"), model_server.url)
    k8s.state.script_changes(
        NAME, [("not_ready", "MinimumReplicasUnavailable", "0/1 nodes have a free GPU")],
        [("ready", model_server.url)],
    )  # fmt: skip
    with pytest.raises(DeployTimeout) as failed:
        _roll_out(k8s, _manifest(), _smoke(model_server), timeout=0.5)
    assert (
        "not ready after 0.5 s (Ready=False MinimumReplicasUnavailable: 0/1 nodes have a free "
        "GPU); rolled back" in str(failed.value)
    )
    assert _uri(k8s.state.service(NS, NAME)) == OLD


def test_terminal_failure_reads_kserves_status():
    def service(ready, reason="", model=None):
        status = {"conditions": [{"type": "Ready", "status": ready, "reason": reason,
                                  "message": "m"}]}  # fmt: skip
        if model:
            status["modelStatus"] = model
        return {"status": status}

    assert terminal_failure(service("False", "RevisionFailed")) == "RevisionFailed: m"
    assert terminal_failure(service("False", "MinimumReplicasUnavailable")) is None
    assert terminal_failure(service("Unknown", "RevisionMissing")) is None
    invalid = {"transitionStatus": "InvalidSpec",
               "lastFailureInfo": {"reason": "NoSupportingRuntime", "message": "no runtime"}}  # fmt: skip
    assert terminal_failure(service("False", "X", invalid)) == (
        "InvalidSpec: NoSupportingRuntime: no runtime"
    )
    assert terminal_failure(service("False", "X", {"transitionStatus": "InProgress"})) is None


# What a cancelled run's deploy task is: a process rolling out, sent SIGTERM by the kubelet.
CHILD = """
import json, sys
from kubernetes import client
from rlhf.pipeline.rollout import roll_out
api = client.ApiClient(client.Configuration(host=sys.argv[1]))
roll_out(json.loads(sys.argv[2]), api, 120, None, log=lambda line: print(line, flush=True),
         poll_seconds=0.05)
"""


def _cancelled(k8s, manifest) -> str:
    """Roll ``manifest`` out in a subprocess, SIGTERM it once it waits for Ready; its output."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, *sys.path])}
    child = subprocess.Popen([sys.executable, "-c", CHILD, k8s.url, json.dumps(manifest)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        # Once it watches, the create or update is done and it waits for Ready.
        k8s.state.wait_for(lambda: any(r.query.get("watch") for r in
                                       list(k8s.state.sent("GET", "inferenceservices"))),
                           timeout=60)  # fmt: skip
        child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=30)
    finally:
        child.kill()
    print(out)
    assert child.returncode == 143, out
    return out


def test_a_cancelled_update_rolls_back_to_the_previous_champion(k8s):
    old = _manifest(OLD, "run-1")
    old["metadata"]["annotations"] = {"team": "nlp"}
    k8s.state.add_service(old, "http://old")
    k8s.state.script_changes(NAME, [("progress",)])  # the new revision never gets ready
    out = _cancelled(k8s, _manifest())
    now = k8s.state.service(NS, NAME)
    assert now["spec"] == old["spec"] and now["metadata"]["labels"] == old["metadata"]["labels"]
    assert now["metadata"]["annotations"] == {"team": "nlp"}
    assert len(k8s.state.sent("PATCH", "inferenceservices")) == 2  # the update, the rollback
    assert (
        f"InferenceService {NS}/{NAME}: the task was terminated (SIGTERM: the run was cancelled); "
        f"rolled back to the previous spec (generation 1, storageUri {OLD})" in out
    )


def test_a_cancelled_first_deployment_is_deleted(k8s):
    k8s.state.script_changes(NAME, [("progress",)])
    out = _cancelled(k8s, _manifest())
    assert k8s.state.service(NS, NAME) is None
    (delete,) = k8s.state.sent("DELETE", "inferenceservices")
    assert delete.path.endswith(f"/inferenceservices/{NAME}")
    assert "SIGTERM: the run was cancelled); deleted the InferenceService it created" in out


def test_timeout_rolls_back(k8s, model_server):
    old = _manifest(OLD, "run-1")
    k8s.state.add_service(old, model_server.url)
    k8s.state.script_changes(NAME, [("progress",)], [("ready", model_server.url)])
    with pytest.raises(DeployTimeout, match=f"{NAME}: not ready after 0.5 s; rolled back"):
        _roll_out(k8s, _manifest(), _smoke(model_server), timeout=0.5)
    assert _uri(k8s.state.service(NS, NAME)) == OLD


def test_the_api_refusing_the_create_is_an_error_naming_why(k8s):
    manifest = _manifest()
    manifest["metadata"]["name"] = "Bad_Name"
    with pytest.raises(Exception, match="the API refused it: .*Bad_Name.* is invalid"):
        _roll_out(k8s, manifest, None)


def test_merge_patch_drops_what_the_new_object_leaves_out():
    old = {"a": 1, "b": {"c": 2, "d": [1, 2]}, "e": "x"}
    new = {"a": 1, "b": {"d": [3]}, "f": {"g": 1}}
    assert merge_patch(old, new) == {"e": None, "b": {"c": None, "d": [3]}, "f": {"g": 1}}
    assert merge_patch(old, old) == {}


def test_the_wait_wakes_on_a_watch_event(k8s, model_server):
    """Polling every 5 s, a ready service is still seen at once: the watch reports it."""
    k8s.state.script_changes(NAME, [("sleep", 0.3), ("ready", model_server.url)])
    api = client.ApiClient(client.Configuration(host=k8s.url))
    done = threading.Event()
    result = {}

    def go():
        result["r"] = roll_out(_manifest(), api, 20.0, _smoke(model_server), log=lambda _: None,
                               poll_seconds=5.0)  # fmt: skip
        done.set()

    threading.Thread(target=go, daemon=True).start()
    assert done.wait(4.0), "the wait did not wake on the watch event"
    assert result["r"].ready_seconds < 4.0
    assert any(r.query.get("watch") for r in k8s.state.sent("GET", "inferenceservices"))
