"""The deploy stage end to end, short of a cluster: the component and ``rlhf deploy`` against a
Kubernetes API server and a completion server started here (found through a kubeconfig, as on a
laptop), the evaluation's gate outcome as the condition the deploy step runs on, the compiled
pipelines with the deploy step, the InferenceService written for review (valid against KServe's
CRD), and a Role granting exactly the calls the roll-out makes."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import sys
import threading
import types
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from json_http import ThreadedServer
from k8s_api_server import K8sApiServer
from kserve_schema import check
from kubernetes import client
from test_rollout import CompletionHandler, CompletionState

from rlhf.cli import main
from rlhf.pipeline import cluster, k8s_manifests
from rlhf.pipeline.compile import compile_all, compile_inferenceservices, compile_package
from rlhf.pipeline.component_runner import run_component
from rlhf.pipeline.inferenceservice import Predictor
from rlhf.pipeline.pod_env import PREDICTOR_ENV
from rlhf.pipeline.rollout import DeployFailed, SmokeRequest, roll_out
from rlhf.stages import specs
from rlhf.stages.specs import STAGES

NS = "team-a"
DEPLOY_ON = {
    "deploy": True,
    "stages": {"deploy": {"gpus": 2, "memory_limit": "48Gi",
                          "node_selector": {"nvidia.com/gpu.product": "NVIDIA-L4"}}},
}  # fmt: skip


class Artifact:
    def __init__(self, path):
        self.path = str(path)


class Metrics:
    def __init__(self):
        self.logged = {}

    def log_metric(self, key, value):
        self.logged[key] = value


@pytest.fixture
def k8s(tmp_path, monkeypatch):
    """The API server, and a kubeconfig whose current context points at it (namespace team-a)."""
    with K8sApiServer() as server:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": server.url}}],
            "users": [{"name": "test", "user": {"token": "t"}}],
            "contexts": [{"name": "test",
                          "context": {"cluster": "test", "user": "test", "namespace": NS}}],
        }))  # fmt: skip
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        monkeypatch.delenv(PREDICTOR_ENV, raising=False)
        yield server


@pytest.fixture
def model_server():
    with ThreadedServer(CompletionHandler, CompletionState()) as server:
        yield server


def _deploy_arguments(tmp_path, model_server, **overrides):
    return dict(
        name="rlhf-policy",
        overrides={"smoke_url": model_server.url, "ready_timeout_seconds": 10, **overrides},
        pipeline_run="run-7", mlflow_experiment="e", track=False,
        service=Artifact(tmp_path / "service"), metrics=Metrics(), publish_to="s3://bucket/runs/",
    )  # fmt: skip


def test_the_component_serves_the_runs_published_policy(k8s, model_server, tmp_path, monkeypatch):
    predictor = Predictor(service_account="rlhf-serving", gpus=2, memory_limit="48Gi")
    monkeypatch.setenv(PREDICTOR_ENV, predictor.to_json())
    k8s.state.script_changes("rlhf-policy", [("ready", model_server.url)])
    arguments = _deploy_arguments(tmp_path, model_server)
    run_component("deploy", arguments)
    served = k8s.state.service(NS, "rlhf-policy")
    model = served["spec"]["predictor"]["model"]
    assert model["storageUri"] == "s3://bucket/runs/run-7/policy"  # publish_destination's
    assert model["resources"]["limits"] == {"memory": "48Gi", "nvidia.com/gpu": "2"}
    assert served["spec"]["predictor"]["serviceAccountName"] == "rlhf-serving"
    assert served["metadata"]["labels"]["rlhf/run"] == "run-7"
    written = yaml.safe_load(Path(arguments["service"].path).read_text())
    assert written["spec"] == served["spec"]
    check(written)
    logged = arguments["metrics"].logged
    assert logged["created"] == 1.0 and logged["ready_seconds"] >= 0
    assert [body["model"] for _, body in model_server.state.requests] == ["rlhf-policy"]


def test_a_failed_deploy_fails_the_task_with_the_reason_and_writes_nothing(
    k8s, model_server, tmp_path
):
    old = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
           "metadata": {"name": "rlhf-policy", "namespace": NS},
           "spec": {"predictor": {"model": {"modelFormat": {"name": "huggingface"},
                                            "storageUri": "s3://bucket/runs/run-6/policy"}}}}  # fmt: skip
    k8s.state.add_service(old, model_server.url)
    k8s.state.script_changes("rlhf-policy", [("not_ready", "RevisionFailed", "CUDA OOM")],
                             [("ready", model_server.url)])  # fmt: skip
    arguments = _deploy_arguments(tmp_path, model_server)
    with pytest.raises(DeployFailed, match="RevisionFailed: CUDA OOM; rolled back .*run-6"):
        run_component("deploy", arguments)
    assert k8s.state.service(NS, "rlhf-policy")["spec"] == old["spec"]
    assert not Path(arguments["service"].path).exists()


def test_without_publish_to_the_deploy_says_what_to_set(k8s, model_server, tmp_path):
    arguments = {**_deploy_arguments(tmp_path, model_server), "publish_to": ""}
    with pytest.raises(ValueError, match="storage_uri: required.*set the pipeline's publish_to"):
        run_component("deploy", arguments)
    assert not k8s.state.requests


def test_rlhf_deploy_from_the_command_line(k8s, model_server, tmp_path, capsys):
    config = tmp_path / "cluster.yaml"
    config.write_text(yaml.safe_dump(DEPLOY_ON))
    k8s.state.script_changes("chat", [("progress",), ("ready", model_server.url)])
    code = main(["deploy", "--no-track", "--out", str(tmp_path / "out"),
                 "--storage-uri", "s3://bucket/runs/run-3/policy",
                 "--set", "name=chat", "--set", f"smoke_url={model_server.url}",
                 "--set", f"cluster_config={config}",
                 "--set", "server_args=--max_model_len=512"])  # fmt: skip
    assert code == 0
    served = k8s.state.service(NS, "chat")
    predictor = served["spec"]["predictor"]
    assert predictor["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4"}
    assert predictor["model"]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert predictor["model"]["args"] == ["--model_name=chat", "--max_model_len=512"]
    out = capsys.readouterr().out
    assert f"InferenceService: {(tmp_path / 'out' / 'inferenceservice.yaml').resolve()}" in out


# -- the evaluation's gate outcome ----------------------------------------------------------------


@pytest.mark.parametrize("metrics, promoted", [({"gate/promoted": 1.0}, True),
                                               ({"gate/promoted": 0.0}, False),
                                               ({"win_rate_rm": 0.9}, False)])  # fmt: skip
def test_the_evaluate_component_returns_whether_the_gate_promoted(monkeypatch, metrics, promoted):
    module = types.ModuleType("gate_probe")
    module.run = lambda config, inputs, outputs, tracker=None: dict(metrics)
    monkeypatch.setitem(sys.modules, "gate_probe", module)
    monkeypatch.setitem(STAGES, "evaluate",
                        dataclasses.replace(STAGES["evaluate"], entry="gate_probe:run"))  # fmt: skip
    arguments = dict(seed=0, samples_per_prompt=1, gold_reward="", data_source="files",
                     overrides={}, pipeline_run="r", mlflow_experiment="e", track=False,
                     eval_prompts=Artifact("p"), candidate=Artifact("c"), reference=Artifact("r"),
                     report=Artifact("report.html"), metrics=Metrics(), reward_model=None,
                     sft_data=None, publish_to="")  # fmt: skip
    assert run_component("evaluate", arguments) is promoted


# -- compiled ---------------------------------------------------------------------------------------


def _package(path: Path) -> tuple[dict, dict]:
    spec, platform = yaml.safe_load_all(path.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[Path, cluster.ClusterConfig]:
    out = tmp_path_factory.mktemp("compiled")
    config = cluster.cluster_config_from_dict(json.loads(json.dumps(DEPLOY_ON)))
    compile_all(out, config)
    return out, config


@pytest.mark.parametrize("pipeline", ["ppo", "dpo", "grpo", "online_dpo"])
def test_the_deploy_step_runs_when_enabled_and_the_gate_promoted(compiled, pipeline):
    out, config = compiled
    spec, executors = _package(out / f"{pipeline}.yaml")
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert parameters["deploy_enabled"]["defaultValue"] is True  # the cluster config's deploy
    tasks = spec["root"]["dag"]["tasks"]
    assert "deploy" not in tasks  # never unconditional
    (outer,) = [t for t in tasks.values() if t["taskInfo"]["name"] == "deploy-enabled"]
    assert outer["triggerPolicy"]["condition"] == (
        "inputs.parameter_values['pipelinechannel--deploy_enabled'] == true"
    )
    inner_component = spec["components"][outer["componentRef"]["name"]]
    (inner,) = inner_component["dag"]["tasks"].values()
    assert inner["taskInfo"]["name"] == "promoted"
    assert inner["triggerPolicy"]["condition"] == (
        "inputs.parameter_values['pipelinechannel--evaluate-Output'] == true"
    )
    assert outer["inputs"]["parameters"]["pipelinechannel--evaluate-Output"] == {
        "taskOutputParameter": {"outputParameterKey": "Output", "producerTask": "evaluate"}
    }
    (deploy,) = spec["components"][inner["componentRef"]["name"]]["dag"]["tasks"].values()
    assert deploy["componentRef"]["name"] == "comp-deploy"
    evaluate_outputs = spec["components"]["comp-evaluate"]["outputDefinitions"]["parameters"]
    assert evaluate_outputs["Output"]["parameterType"] == "BOOLEAN"
    # The task is a small CPU launcher; the predictor's GPUs travel in its environment.
    container = spec["deploymentSpec"]["executors"]["exec-deploy"]["container"]
    assert container["image"] == config.image("cpu")
    assert "accelerator" not in container.get("resources", {})
    env = {e["name"]: e["value"] for e in container["env"]}
    assert Predictor(**json.loads(env[PREDICTOR_ENV])) == cluster.predictor(config)
    assert cluster.predictor(config).gpus == 2
    assert int(executors["exec-deploy"]["activeDeadlineSeconds"]) == 3600


def test_by_default_the_deploy_step_is_off(tmp_path):
    spec, _ = _package(compile_package("dpo", tmp_path / "p.yaml", cluster.ClusterConfig()))
    assert spec["root"]["inputDefinitions"]["parameters"]["deploy_enabled"]["defaultValue"] is False
    assert "comp-deploy" in spec["components"]  # compiled in, switched by the parameter


def test_the_inferenceservice_is_written_for_review_and_valid(compiled):
    out, config = compiled
    for pipeline in ("ppo", "dpo", "grpo", "online_dpo"):
        text = (out / "k8s" / "inferenceservices" / f"{pipeline}.yaml").read_text()
        assert text.startswith(f"# The InferenceService the deploy step of the {pipeline} ")
        manifest = yaml.safe_load(text)
        check(manifest)
        assert "namespace" not in manifest["metadata"]
        predictor = manifest["spec"]["predictor"]
        assert predictor["model"]["storageUri"] == "s3://PUBLISH-TO/RUN-ID/policy"
        assert predictor["model"]["resources"]["limits"] == {"memory": "48Gi",
                                                             "nvidia.com/gpu": "2"}  # fmt: skip
        assert predictor["serviceAccountName"] == config.serving_service_account
    account = yaml.safe_load((out / "k8s" / "serving-account.yaml").read_text())
    kubernetes_validate.validate(account, kubernetes_validate.latest_version(), strict=True)
    assert account["metadata"]["name"] == "rlhf-serving"
    assert account["secrets"] == [{"name": "rlhf-s3"}]  # the Secret the pipeline reads S3 from


def test_the_rbac_is_valid_and_bound_to_the_pipeline_service_account(compiled):
    out, _ = compiled
    role, binding = yaml.safe_load_all((out / "k8s" / "inferenceservice-rbac.yaml").read_text())
    for doc in (role, binding):
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    assert role["rules"] == k8s_manifests.INFERENCESERVICE_RULES
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pipeline-runner"}]


def test_recompiling_without_deploy_removes_the_review_files(tmp_path):
    config = cluster.cluster_config_from_dict(json.loads(json.dumps(DEPLOY_ON)))
    written = compile_inferenceservices(tmp_path, config)
    assert {p.name for p in written} == {
        "ppo.yaml", "dpo.yaml", "grpo.yaml", "online_dpo.yaml", "kto.yaml",
        "inferenceservice-rbac.yaml", "serving-account.yaml",
    }  # fmt: skip
    assert compile_inferenceservices(tmp_path, cluster.ClusterConfig()) == []
    assert not list(tmp_path.rglob("*.yaml"))


def test_deploy_without_an_s3_secret_is_named():
    config = cluster.cluster_config_from_dict({"deploy": True, "secrets": []})
    with pytest.raises(ValueError, match="no Secret in secrets has the key AWS_ACCESS_KEY_ID"):
        compile_inferenceservices(Path("/nonexistent"), config)


def test_the_predictor_may_have_several_gpus_but_not_nodes():
    config = cluster.cluster_config_from_dict({"stages": {"deploy": {"gpus": 4}}})
    assert cluster.predictor(config).gpus == 4
    with pytest.raises(ValueError, match="only the training stages run on several"):
        cluster.cluster_config_from_dict({"stages": {"deploy": {"nodes": 2}}})


# -- least privilege: the Role against the calls the roll-out makes -------------------------------


def _verb(method: str, path: str, query: dict[str, str]) -> tuple[str, str]:
    named = re.search(r"/inferenceservices/[^/]+$", path) is not None
    if method in ("POST", "PATCH", "DELETE"):
        return "inferenceservices", {"POST": "create", "PATCH": "patch", "DELETE": "delete"}[method]
    if query.get("watch", "").lower() in ("1", "t", "true"):
        return "inferenceservices", "watch"
    return "inferenceservices", "get" if named else "list"


def test_the_role_grants_exactly_the_calls_the_rollout_makes(model_server):
    granted = {(resource, verb) for rule in k8s_manifests.INFERENCESERVICE_RULES
               for resource in rule["resources"] for verb in rule["verbs"]}  # fmt: skip
    from rlhf.pipeline.inferenceservice import inferenceservice_manifest

    def manifest(uri):
        return inferenceservice_manifest(name="p", namespace=NS, storage_uri=uri,
                                         predictor=Predictor())  # fmt: skip

    smoke = SmokeRequest(prompt="hi", url=model_server.url)
    with K8sApiServer() as server:
        api = client.ApiClient(client.Configuration(host=server.url))
        # Each change takes a moment: the task waits (watches) for each.
        server.state.script_changes("p", [("progress",), ("sleep", 0.3), ("ready",)],
                                    [("sleep", 0.3), ("not_ready", "RevisionFailed", "y")],
                                    [("sleep", 0.3), ("ready",)])  # fmt: skip
        roll_out(manifest("s3://b/1"), api, 10, smoke, log=lambda _: None, poll_seconds=0.05)
        with pytest.raises(DeployFailed):  # an update, failed and rolled back
            roll_out(manifest("s3://b/2"), api, 10, smoke, log=lambda _: None, poll_seconds=0.05)

        # A first deployment of another name cancelled (SIGTERM) while it comes up: deleted.
        def cancel_once_created() -> None:
            posts = server.state.sent
            server.state.wait_for(lambda: any(r.body["metadata"]["name"] == "q"
                                              for r in posts("POST", "inferenceservices")))  # fmt: skip
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=cancel_once_created, daemon=True).start()
        with pytest.raises(SystemExit):
            roll_out(manifest("s3://b/3") | {"metadata": {"name": "q", "namespace": NS}}, api,
                     10, smoke, log=lambda _: None, poll_seconds=0.05)  # fmt: skip
        assert server.state.service(NS, "q") is None
        used = {_verb(r.method, r.path, r.query) for r in server.state.requests}
    assert used == granted


def test_deploy_is_the_last_stage_and_optional():
    spec = specs.get_stage("deploy")
    assert spec.optional and spec.launcher and not spec.gpu
    assert [s.name for s in STAGES.values() if s.optional] == ["deploy"]
