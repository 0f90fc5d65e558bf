"""The Helm chart (charts/rlhf), rendered and linted by a real Helm engine (helm-python-sdk):
with its defaults and with each documented values file in charts/rlhf/examples/, every object
passes Kubernetes' schema, every pod runs locked down, no credential reaches a manifest, the
RBAC is exactly the code's, and bad values fail at install with the value's path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

import rlhf
from rlhf.pipeline import k8s_manifests
from rlhf.pipeline.cluster import ClusterConfig, cluster_config_from_dict
from rlhf.pipeline.images import image_ref

CHART = Path(__file__).resolve().parents[2] / "charts" / "rlhf"
EXAMPLES = sorted((CHART / "examples").glob("*.yaml"))
RELEASE, NAMESPACE = "demo", "ml"
CASES = {"defaults": {}} | {p.stem: yaml.safe_load(p.read_text()) for p in EXAMPLES}
WORKLOADS = {"Deployment", "StatefulSet", "Job", "Pod"}
RECOMMENDED_LABELS = {
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
}
# Recognisable fake credentials: put where a careless template (or user) would pass them on.
FAKE = {
    "AWS_ACCESS_KEY_ID": "AKIAFAKELEAKCHECK0001",
    "AWS_SECRET_ACCESS_KEY": "fake-secret-leak-check-8c1f0e",
    "MLFLOW_TRACKING_PASSWORD": "fake-mlflow-password-leak-check",
    "PGPASSWORD": "fake-db-password-leak-check",
    "POSTGRES_PASSWORD": "fake-postgres-password-leak-check",
}


@pytest.fixture(scope="module")
def chart() -> Any:
    loaded = helm_python.Chart.load(str(CHART))
    yield loaded
    loaded.close()


def render(chart: Any, values: dict[str, Any]) -> dict[str, str]:
    return chart.render(values, name=RELEASE, namespace=NAMESPACE)


def objects(chart: Any, values: dict[str, Any]) -> list[dict[str, Any]]:
    docs = []
    for path, text in render(chart, values).items():
        if path.endswith(".yaml"):
            docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} rendered"
    return found[0]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"] if doc["kind"] == "Pod" else doc["spec"]["template"]["spec"]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def test_the_examples_are_there() -> None:
    assert {p.name for p in EXAMPLES} >= {
        "external-db-and-s3.yaml",
        "ingress.yaml",
        "multi-node.yaml",
        "bundled-storage.yaml",
    }


@pytest.mark.parametrize("case", CASES)
def test_lint_is_clean(case: str) -> None:
    report = helm_python.lint(str(CHART), CASES[case], strict=True)
    assert report["errors"] == []
    # Only the info that the chart has no icon.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("case", CASES)
def test_every_object_passes_the_kubernetes_schema(chart: Any, case: str) -> None:
    version = kubernetes_validate.latest_version()
    docs = objects(chart, CASES[case])
    assert docs
    for doc in docs:  # all built-in kinds: kubernetes-validate has a schema for each
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_schema_check_can_fail(chart: Any) -> None:
    job = find(objects(chart, {}), "Job", f"{RELEASE}-rlhf-buckets")
    job["spec"]["backoffLimit"] = "six"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize("case", CASES)
def test_every_pod_runs_locked_down(chart: Any, case: str) -> None:
    workloads = [d for d in objects(chart, CASES[case]) if d["kind"] in WORKLOADS]
    assert {d["kind"] for d in workloads} >= {"Deployment", "Job", "Pod"}
    for doc in workloads:
        where = f"{case}: {doc['kind']} {doc['metadata']['name']}"
        spec = pod_spec(doc)
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0, where
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] > 0, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert sc["readOnlyRootFilesystem"] is True, where
            # Writable places for a read-only root: /tmp at least, on an emptyDir or a volume.
            assert "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}, where
            for part in ("requests", "limits"):
                assert set(c["resources"][part]) == {"cpu", "memory"}, where


@pytest.mark.parametrize("case", CASES)
def test_no_credential_reaches_a_manifest(
    chart: Any, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in FAKE.items():
        monkeypatch.setenv(key, value)  # a template reading the environment would leak these
    rendered = "\n".join(render(chart, CASES[case]).values())
    for value in FAKE.values():
        assert value not in rendered
    docs = objects(chart, CASES[case])
    assert "Secret" not in {d["kind"] for d in docs}  # users create them; the chart never does
    for doc in (d for d in docs if d["kind"] in WORKLOADS):
        for c in pod_spec(doc)["containers"]:
            for name, entry in env_of(c).items():
                if any(w in name for w in ("SECRET", "PASSWORD", "ACCESS_KEY", "TOKEN")):
                    # Credentials only by reference (a token *path* is no credential).
                    assert "value" not in entry or name.endswith("_PATH"), (doc, name)
            uri = env_of(c).get("MLFLOW_BACKEND_STORE_URI", {}).get("value", "")
            assert ":" not in uri.removeprefix("postgresql://").split("@")[0]  # no password


def test_credential_values_are_refused(chart: Any) -> None:
    """There is no value to put a credential in: the schema refuses one next to the names."""
    with pytest.raises(helm_python.HelmValuesError, match="awsSecretAccessKey"):
        render(chart, {"secrets": {"awsSecretAccessKey": FAKE["AWS_SECRET_ACCESS_KEY"]}})


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"mlflow": {"replicas": "two"}}, "/mlflow/replicas"),
        ({"mlflow": {"replicaz": 2}}, "replicaz"),
        ({"bogus": True}, "bogus"),
        ({"mlflow": {"artifacts": {"mode": "s3"}}}, "/mlflow/artifacts/mode"),
        ({"seaweedfs": {"persistence": {"size": "lots"}}}, "/seaweedfs/persistence/size"),
        ({"postgresql": {"resources": {"requests": {"cpu": "one"}}}}, "/postgresql/resources"),
        ({"jobs": {"resources": {"limits": {"gpu": 1}}}}, "gpu"),
        ({"schedules": [{"name": "n", "cron": "0 3 * * *'; rm -rf /"}]}, "/schedules/0/cron"),
        ({"schedules": [{"name": "no-trigger"}]}, "/schedules/0"),
        ({"networkPolicy": {"mlflowClients": [{"ipBlock": {}}]}}, "ipBlock"),
        ({"runConfig": {"pipeline": "sft"}}, "/runConfig/pipeline"),
    ],
)
def test_bad_values_fail_naming_the_value(chart: Any, values: dict, named: str) -> None:
    with pytest.raises(helm_python.HelmValuesError) as raised:
        render(chart, values)
    assert named in str(raised.value)
    report = helm_python.lint(str(CHART), values)  # `helm lint` says the same
    assert any(named in e for e in report["errors"])


def _walk(node: Any, path: str = "") -> list[str]:
    """The paths of schema objects that would accept keys they do not list."""
    loose = []
    if isinstance(node, dict):
        strict = node.get("additionalProperties") is False
        if node.get("type") == "object" and "properties" in node and not strict:
            loose.append(path or "/")
        for key, child in node.items():
            loose += _walk(child, f"{path}/{key}")
    elif isinstance(node, list):
        for i, child in enumerate(node):
            loose += _walk(child, f"{path}/{i}")
    return loose


def test_the_schema_is_strict_at_every_level() -> None:
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert _walk(schema) == []


def test_versions_follow_the_package(chart: Any) -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["appVersion"] == rlhf.__version__
    docs = objects(chart, {"seaweedfs": {"enabled": True}})
    images = {c["image"] for d in docs if d["kind"] in WORKLOADS for c in pod_spec(d)["containers"]}
    project = {i for i in images if "/rlhf:" in i}
    assert project == {image_ref("cpu")} == {ClusterConfig().image("cpu")}
    others = images - project
    assert {i.split(":")[0] for i in others} == {"postgres", "chrislusf/seaweedfs"}
    assert all(i.split(":")[1][0].isdigit() for i in others)  # pinned, never "latest"
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert set(labels) >= RECOMMENDED_LABELS, doc["metadata"]["name"]
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/version"] == rlhf.__version__
        assert labels["app.kubernetes.io/part-of"] == "rlhf"


def test_the_endpoints_are_what_the_stages_read(chart: Any) -> None:
    default = ClusterConfig()
    config_map = find(objects(chart, {}), "ConfigMap", default.config_maps[0].name)
    assert config_map["data"] == {
        "AWS_ENDPOINT_URL": "http://minio-service.kubeflow:9000",
        "MLFLOW_TRACKING_URI": "http://demo-rlhf-mlflow.ml.svc.cluster.local:5000",
    }
    assert sorted(config_map["data"]) == sorted(default.config_maps[0].keys)
    docs = objects(chart, CASES["bundled-storage"])
    endpoint = "http://demo-rlhf-seaweedfs.ml.svc.cluster.local:8333"
    assert find(docs, "ConfigMap", "rlhf-endpoints")["data"]["AWS_ENDPOINT_URL"] == endpoint
    service = find(docs, "Service", "demo-rlhf-seaweedfs")
    assert service["spec"]["ports"][0]["port"] == 8333
    mlflow = find(docs, "Service", "demo-rlhf-mlflow")
    assert mlflow["spec"]["ports"][0]["port"] == 5000
    # The S3 credentials come from the Secret the stages read (cluster.py's default).
    s3_secret = default.secrets[0]
    container = pod_spec(find(docs, "Deployment", "demo-rlhf-mlflow"))["containers"][0]
    for key in s3_secret.keys:
        assert env_of(container)[key]["valueFrom"]["secretKeyRef"] == {
            "name": s3_secret.name,
            "key": key,
        }
    sw = pod_spec(find(docs, "StatefulSet", "demo-rlhf-seaweedfs"))["containers"][0]
    assert "-s3.config=/tmp/s3.json" in sw["command"][2]


def test_mlflow_server_artifacts_proxy_or_direct(chart: Any) -> None:
    deployment = find(objects(chart, {}), "Deployment", "demo-rlhf-mlflow")
    container = pod_spec(deployment)["containers"][0]
    assert container["command"] == [
        "mlflow",
        "server",
        "--host=0.0.0.0",
        "--port=5000",
        "--workers=2",
        "--serve-artifacts",
        "--artifacts-destination=s3://rlhf-mlflow/artifacts",
    ]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    env = env_of(container)
    assert env["MLFLOW_BACKEND_STORE_URI"]["value"] == (
        "postgresql://mlflow@demo-rlhf-postgresql:5432/mlflow"
    )
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "rlhf-mlflow-db",
        "key": "password",
    }
    # MLflow answers only the Host headers it knows: its Service's names.
    assert "demo-rlhf-mlflow.ml.svc.cluster.local:*" in env["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"]
    direct = {"mlflow": {"artifacts": {"mode": "direct", "bucket": "bkt1", "prefix": "mlf"}}}
    container = pod_spec(find(objects(chart, direct), "Deployment", "demo-rlhf-mlflow"))
    assert container["containers"][0]["command"][-2:] == [
        "--no-serve-artifacts",
        "--default-artifact-root=s3://bkt1/mlf",
    ]


def test_external_database(chart: Any) -> None:
    docs = objects(chart, CASES["external-db-and-s3"])
    assert "StatefulSet" not in {d["kind"] for d in docs}
    env = env_of(pod_spec(find(docs, "Deployment", "demo-rlhf-mlflow"))["containers"][0])
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"] == {
        "name": "rlhf-mlflow-db-uri",
        "key": "uri",
    }
    assert "PGPASSWORD" not in env
    with pytest.raises(helm_python.HelmRenderError, match="externalDatabase.uriSecret.name"):
        render(chart, {"postgresql": {"enabled": False}})


def test_ingress(chart: Any) -> None:
    docs = objects(chart, CASES["ingress"])
    ingress = find(docs, "Ingress", "demo-rlhf-mlflow")
    rule = ingress["spec"]["rules"][0]
    assert rule["host"] == "mlflow.example.com"
    assert rule["http"]["paths"][0]["backend"]["service"]["name"] == "demo-rlhf-mlflow"
    assert ingress["spec"]["tls"] == [
        {"hosts": ["mlflow.example.com"], "secretName": "mlflow-example-com-tls"}
    ]
    env = env_of(pod_spec(find(docs, "Deployment", "demo-rlhf-mlflow"))["containers"][0])
    assert "mlflow.example.com" in env["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"].split(",")
    assert "Ingress" not in {d["kind"] for d in objects(chart, {})}


def _rules(role: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: list(v) for k, v in rule.items()} for rule in role["rules"]]


def test_rbac_is_exactly_the_codes(chart: Any) -> None:
    default = objects(chart, {})
    submitter = find(default, "Role", k8s_manifests.SUBMITTER)
    assert _rules(submitter) == k8s_manifests._rbac()[1]["rules"]
    assert not [d for d in default if d["metadata"]["name"] == k8s_manifests.TRAINJOB_ROLE]
    # With schedules, the recurring runs' rules too (and nothing else).
    scheduling = find(objects(chart, CASES["bundled-storage"]), "Role", k8s_manifests.SUBMITTER)
    assert _rules(scheduling) == k8s_manifests._rbac()[1]["rules"] + k8s_manifests.SCHEDULER_RULES

    docs = objects(chart, CASES["multi-node"])
    role = find(docs, "Role", k8s_manifests.TRAINJOB_ROLE)
    assert _rules(role) == k8s_manifests.TRAINJOB_RULES
    binding = find(docs, "RoleBinding", k8s_manifests.TRAINJOB_ROLE)
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": ClusterConfig().pipeline_service_account,
            "namespace": NAMESPACE,
        }
    ]
    assert binding["roleRef"]["name"] == k8s_manifests.TRAINJOB_ROLE


def test_serving_rbac_is_exactly_the_codes(chart: Any) -> None:
    """serving.enabled: the deploy step's Role (exactly INFERENCESERVICE_RULES) bound to the
    pipeline's ServiceAccount, and the predictor's ServiceAccount naming the S3 Secret."""
    assert not [d for d in objects(chart, {})
                if d["metadata"]["name"] == k8s_manifests.INFERENCESERVICE_ROLE]  # fmt: skip
    docs = objects(chart, {"serving": {"enabled": True}})
    role = find(docs, "Role", k8s_manifests.INFERENCESERVICE_ROLE)
    assert _rules(role) == k8s_manifests.INFERENCESERVICE_RULES
    binding = find(docs, "RoleBinding", k8s_manifests.INFERENCESERVICE_ROLE)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "namespace": NAMESPACE,
                                    "name": ClusterConfig().pipeline_service_account}]  # fmt: skip
    account = find(docs, "ServiceAccount", ClusterConfig().serving_service_account)
    assert account["secrets"] == [{"name": "rlhf-s3"}]  # a reference, never a credential


def test_network_policies(chart: Any) -> None:
    docs = objects(chart, {})
    mlflow = find(docs, "NetworkPolicy", "demo-rlhf-mlflow")
    assert mlflow["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "mlflow"
    peers = mlflow["spec"]["ingress"][0]["from"]
    assert peers[0] == {"podSelector": {"matchLabels": {"app.kubernetes.io/instance": RELEASE}}}
    assert {"key": "rlhf/stage", "operator": "Exists"} in (
        peers[1]["podSelector"]["matchExpressions"]
    )
    assert peers[2]["podSelector"] == {"matchLabels": {"app": "ml-pipeline-ui"}}
    database = find(docs, "NetworkPolicy", "demo-rlhf-postgresql")
    assert database["spec"]["ingress"] == [
        {
            "ports": [{"port": "postgresql"}],
            "from": [
                {
                    "podSelector": {
                        "matchLabels": {
                            "app.kubernetes.io/name": "rlhf",
                            "app.kubernetes.io/instance": RELEASE,
                            "app.kubernetes.io/component": "mlflow",
                        }
                    }
                }
            ],
        }
    ]
    assert "NetworkPolicy" not in {
        d["kind"] for d in objects(chart, {"networkPolicy": {"enabled": False}})
    }


def test_hooks_and_helm_tests(chart: Any) -> None:
    docs = objects(chart, CASES["bundled-storage"])
    for name in ("demo-rlhf-buckets", "demo-rlhf-submit", "demo-rlhf-schedules"):
        hook = find(docs, "Job", name)["metadata"]["annotations"]["helm.sh/hook"]
        assert hook == "post-install,post-upgrade"
    weights = {
        d["metadata"]["name"]: int(d["metadata"]["annotations"]["helm.sh/hook-weight"])
        for d in docs
        if d["kind"] == "Job"
    }
    assert weights["demo-rlhf-buckets"] < weights["demo-rlhf-submit"]  # buckets first
    buckets = pod_spec(find(docs, "Job", "demo-rlhf-buckets"))["containers"][0]["command"]
    assert buckets[3:] == ["rlhf-data", "rlhf-models", "rlhf-mlflow"]
    tests = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Pod"}
    assert set(tests) == {"demo-rlhf-test-mlflow", "demo-rlhf-test-buckets"}
    for pod in tests.values():
        assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    health = tests["demo-rlhf-test-mlflow"]["spec"]["containers"][0]["command"]
    assert (
        '"/health"' in health[2]
        and health[3] == "http://demo-rlhf-mlflow.ml.svc.cluster.local:5000"
    )
    assert "head_bucket" in tests["demo-rlhf-test-buckets"]["spec"]["containers"][0]["command"][2]
    submit = pod_spec(find(docs, "Job", "demo-rlhf-submit"))
    assert submit["serviceAccountName"] == k8s_manifests.SUBMITTER
    assert submit["containers"][0]["command"][:3] == ["rlhf", "submit", "--pipeline=ppo"]
    # No hook Job for what is off.
    names = {d["metadata"]["name"] for d in objects(chart, {"s3": {"createBuckets": False}})}
    assert not {"demo-rlhf-buckets", "demo-rlhf-submit", "demo-rlhf-schedules"} & names


def test_schedules_are_replaced_with_rlhf_schedule_create(chart: Any) -> None:
    docs = objects(chart, CASES["external-db-and-s3"])
    script = pod_spec(find(docs, "Job", "demo-rlhf-schedules"))["containers"][0]["command"][2]
    lines = script.splitlines()
    assert lines[-2:] == [
        "replace 'nightly-retrain' --pipeline 'ppo' --experiment 'rlhf-prod' "
        "--cron '0 0 3 * * *' --max-concurrency 1",
        "replace 'weekly-grpo' --pipeline 'grpo' --experiment 'rlhf-grpo' "
        "--interval '7d' --max-concurrency 1",
    ]
    assert 'rlhf schedule create --replace --name "$name"' in script
    assert "--cluster-config /etc/rlhf/cluster.yaml --namespace 'team-ml' \"$@\"" in script
    catchup = {"schedules": [{"name": "x", "interval": "12h", "catchup": True}]}
    script = pod_spec(find(objects(chart, catchup), "Job", "demo-rlhf-schedules"))
    assert script["containers"][0]["command"][2].splitlines()[-1] == (
        "replace 'x' --pipeline 'ppo' --experiment 'rlhf' --interval '12h' "
        "--max-concurrency 1 --catchup"
    )


@pytest.mark.parametrize("case", CASES)
def test_the_run_config_map_holds_configs_rlhf_accepts(chart: Any, case: str) -> None:
    config_map = find(objects(chart, CASES[case]), "ConfigMap", k8s_manifests.RUN_CONFIG_MAP)
    assert set(config_map["data"]) == {"pipeline", "run.yaml", "cluster.yaml"}
    assert isinstance(yaml.safe_load(config_map["data"]["run.yaml"]), dict)
    cluster = yaml.safe_load(config_map["data"]["cluster.yaml"])
    cluster_config_from_dict(cluster, where=f"{case}: cluster.yaml")  # raises on a mistake


def _value_paths(values: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of the documented values: leaves, lists, empty maps and resources."""
    paths = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and key != "resources":
            paths += _value_paths(value, f"{path}.")
        else:
            paths.append(path)
    return paths


def test_every_value_is_documented() -> None:
    doc = (CHART.parents[1] / "docs" / "chart.md").read_text()
    paths = _value_paths(yaml.safe_load((CHART / "values.yaml").read_text()))
    assert "mlflow.ingress.annotations" in paths and "postgresql.resources" in paths
    assert [p for p in paths if f"| `{p}` |" not in doc] == []
