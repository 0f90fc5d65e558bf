"""What `rlhf compile` writes for a cluster: every pipeline's package carries each stage's image,
resources, GPUs, /dev/shm, scheduling, timeout, retries, caching and Secrets; the committed
packages, k8s manifests and component specs match the code; the manifests pass a Kubernetes
schema check; the component specs load and run in another pipeline."""

import dataclasses
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from compiled_yaml import load_without_sdk_version
from kfp import compiler, components, dsl

from rlhf.cli import main
from rlhf.pipeline import cluster
from rlhf.pipeline.compile import (
    compile_all,
    compile_package,
    k8s_name,
    stage_components,
    version_name,
)
from rlhf.pipeline.pipelines import PIPELINES
from rlhf.pipeline.pod_env import PROCESSES_ENV
from rlhf.stages.specs import STAGES

ROOT = Path(__file__).resolve().parents[2]
DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _package(path: Path) -> tuple[dict, dict]:
    """(pipeline spec, kubernetes platform spec's executors) of a compiled package."""
    spec, platform = yaml.safe_load_all(path.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _tasks(spec: dict) -> dict[str, dict]:
    return spec["root"]["dag"]["tasks"]


def _all_tasks(spec: dict) -> dict[str, dict]:
    """Every task of the package, those inside conditions too (KFP names tasks uniquely)."""
    tasks = dict(_tasks(spec))
    for component in spec["components"].values():
        tasks.update(component.get("dag", {}).get("tasks", {}))
    return tasks


def _quantity(text: str) -> float:
    """ "16Gi" -> bytes / 1e9 and "500m" -> cores: how KFP writes cpu/memory as numbers."""
    units = {"Gi": 2**30 / 1e9, "Mi": 2**20 / 1e9, "G": 1.0, "m": 1e-3}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def _check_stage(task: dict, executor: dict, platform: dict, stage: cluster.StageResources,
                 config: cluster.ClusterConfig) -> None:  # fmt: skip
    container = executor["container"]
    assert container["image"] == config.image(stage.image)
    res = container.get("resources", {})
    for field, key in (("cpu_request", "resourceCpuRequest"), ("cpu_limit", "resourceCpuLimit"),
                       ("memory_request", "resourceMemoryRequest"),
                       ("memory_limit", "resourceMemoryLimit")):  # fmt: skip
        assert res.get(key, "") == getattr(stage, field), field
    if stage.memory_limit:
        assert res["memoryLimit"] == pytest.approx(_quantity(stage.memory_limit))
    if stage.gpus:
        assert res["accelerator"]["resourceType"] == stage.accelerator_type
        assert res["accelerator"]["resourceCount"] == str(stage.gpus)
    else:
        assert "accelerator" not in res
    # Several GPUs: the component runs the stage as one process per GPU (torchrun).
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    assert env.get(PROCESSES_ENV) == (str(stage.gpus) if stage.gpus > 1 else None)
    shm = [m for m in platform.get("emptyDirMounts", []) if m["mountPath"] == "/dev/shm"]
    if stage.shm_size:
        assert shm == [{"medium": "Memory", "mountPath": "/dev/shm", "sizeLimit": stage.shm_size,
                        "volumeName": "dshm"}]  # fmt: skip
    else:
        assert shm == []
    selector = platform.get("nodeSelector", {}).get("labels", {})
    assert selector == stage.node_selector
    tolerations = platform.get("tolerations", [])
    assert [t["key"] for t in tolerations] == [t["key"] for t in stage.tolerations]
    assert int(platform.get("activeDeadlineSeconds", 0)) == stage.timeout_seconds
    retry = task.get("retryPolicy")
    if stage.retries:
        assert retry == {"maxRetryCount": stage.retries, "backoffDuration": stage.retry_backoff,
                         "backoffFactor": stage.retry_backoff_factor,
                         "backoffMaxDuration": stage.retry_backoff_max}  # fmt: skip
    else:
        assert retry is None
    assert task["cachingOptions"].get("enableCache", False) is stage.caching
    # Credentials and endpoints as environment variables from Secrets and ConfigMaps.
    secrets = {s["secretName"]: s for s in platform.get("secretAsEnv", [])}
    assert set(secrets) == {s.name for s in config.secrets if s.name}
    for source in config.secrets:
        if source.name:
            got = secrets[source.name]
            assert [k["envVar"] for k in got["keyToEnv"]] == source.keys
            assert got.get("optional", False) is source.optional
    maps = {m["configMapName"]: m for m in platform.get("configMapAsEnv", [])}
    assert set(maps) == {m.name for m in config.config_maps if m.name}
    for source in config.config_maps:
        if source.name:
            assert [k["envVar"] for k in maps[source.name]["keyToEnv"]] == source.keys


def _check_package(path: Path, config: cluster.ClusterConfig) -> set[str]:
    """Every task of the package carries its stage's settings; returns the stages seen."""
    spec, executors = _package(path)
    seen = set()
    for name, task in _all_tasks(spec).items():
        component = spec["components"][task["componentRef"]["name"]]
        if "dag" in component:  # conditions: their tasks are checked on their own
            continue
        executor_label = component["executorLabel"]
        if "importer" in spec["deploymentSpec"]["executors"][executor_label]:
            continue  # collect's given model: no pod
        platform = executors[executor_label]
        labels = platform.get("podMetadata", {}).get("labels", {})
        assert cluster.STAGE_LABEL in labels, f"task {name}: configure() was not called"
        stage = labels[cluster.STAGE_LABEL]
        if STAGES[stage].launcher:  # the deploy step's small pod: test_deploy_stage.py
            continue
        seen.add(stage)
        executor = spec["deploymentSpec"]["executors"][executor_label]
        _check_stage(task, executor, platform, config.stages[stage], config)
    return seen


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_every_pipeline_compiles_with_the_default_cluster_settings(name, tmp_path):
    path = compile_package(name, tmp_path / "p.yaml", cluster.ClusterConfig())
    stages = _check_package(path, cluster.ClusterConfig())
    assert "prepare" in stages
    defaults = cluster.default_stages()
    # What the issue asks of the defaults: GPU training on the CUDA image, retried, not cached;
    # prepare cached on the CPU image.
    assert defaults["prepare"].caching and defaults["prepare"].image == "cpu"
    assert defaults["evaluate"].image == "cpu" and defaults["candidates"].image == "cpu"
    for training in stages - {"prepare", "evaluate", "candidates"}:
        s = defaults[training]
        assert s.image == "cuda" and s.gpus >= 1 and s.retries >= 1
        assert not s.caching and s.shm_size


def test_collect_samples_from_the_sft_model_or_from_a_given_model(tmp_path):
    """``model`` empty: prepare -> SFT -> candidates; set: prepare -> the model imported as an
    artifact -> candidates, without SFT. Both branches are configured for the cluster."""
    path = compile_package("collect", tmp_path / "c.yaml", cluster.ClusterConfig())
    assert _check_package(path, cluster.ClusterConfig()) == {"prepare", "sft", "candidates"}
    spec, _ = _package(path)
    assert spec["root"]["inputDefinitions"]["parameters"]["model"]["defaultValue"] == ""
    tasks = _all_tasks(spec)
    model = "inputs.parameter_values['pipelinechannel--model']"
    assert tasks["condition-2"]["triggerPolicy"]["condition"] == f"{model} == ''"
    assert tasks["condition-3"]["triggerPolicy"]["condition"] == f"!({model} == '')"
    branch = {name: spec["components"][tasks[name]["componentRef"]["name"]]["dag"]["tasks"]
              for name in ("condition-2", "condition-3")}  # fmt: skip
    assert set(branch["condition-2"]) == {"sft", "candidates"}
    assert set(branch["condition-3"]) == {"importer", "candidates-2"}
    importer = branch["condition-3"]["importer"]
    assert importer["inputs"]["parameters"]["uri"] == {
        "componentInputParameter": "pipelinechannel--model"
    }
    executor = spec["components"][importer["componentRef"]["name"]]["executorLabel"]
    assert spec["deploymentSpec"]["executors"][executor]["importer"]["typeSchema"] == {
        "schemaTitle": "system.Model", "schemaVersion": "0.0.1"
    }  # fmt: skip
    for task, producer, key in (("candidates", "sft", "model"),
                                ("candidates-2", "importer", "artifact")):  # fmt: skip
        (inputs,) = [b[task]["inputs"]["artifacts"] for b in branch.values() if task in b]
        assert inputs["model"]["taskOutputArtifact"] == {
            "outputArtifactKey": key, "producerTask": producer
        }  # fmt: skip
        assert inputs["prompts"] == {"componentInputArtifact": "pipelinechannel--prepare-prompts"}
    assert "sft" not in _tasks(spec)  # SFT runs only in its branch


def test_a_cluster_config_file_changes_what_is_compiled(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "registry": "registry.example.com/ml",
                "tag": "2026-11",
                "cpu_image": "registry.example.com/ml/custom:cpu",
                "image_pull_secrets": ["regcred"],
                "secrets": [{"name": "minio-creds", "keys": ["AWS_ACCESS_KEY_ID"]}],
                "config_maps": [{"name": "", "keys": []}],
                "stages": {
                    "sft": {
                        "gpus": 8, "memory_limit": "400Gi",
                        "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                        "retries": 0, "caching": True,
                    },
                    "prepare": {"caching": False, "timeout_seconds": 60},
                },
            }
        )
    )  # fmt: skip
    config = cluster.load_cluster_config(path)
    assert config.image("cuda") == "registry.example.com/ml/rlhf:2026-11-cuda"
    assert config.stages["sft"].cpu_limit == "8"  # untouched fields keep their defaults
    out = compile_package("ppo", tmp_path / "p.yaml", config)
    _check_package(out, config)
    spec, executors = _package(out)
    sft = executors["exec-sft"]
    assert sft["imagePullSecret"] == [{"secretName": "regcred", "secretNameParameter":
                                       {"runtimeValue": {"constant": "regcred"}}}]  # fmt: skip
    assert [s["secretName"] for s in sft["secretAsEnv"]] == ["minio-creds"]
    assert "configMapAsEnv" not in sft
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {
        "registry.example.com/ml/custom:cpu",
        "registry.example.com/ml/rlhf:2026-11-cuda",
    }


@pytest.mark.parametrize(
    "text, message",
    [
        ("stages:\n  sft: {gpu_count: 2}\n", "stages.sft: unknown field(s) ['gpu_count']"),
        ("stages:\n  rl: {}\n", "unknown stage 'rl'"),
        ("stages:\n  sft: {gpus: many}\n", "gpus"),
        ("stages:\n  prepare: {gpus: 1}\n", "needs an accelerator_type"),
        ("stages:\n  evaluate: {gpus: 2, accelerator_type: nvidia.com/gpu}\n",
         "only the training stages run one process per GPU"),
        ("stages:\n  sft: {tolerations: [{key: a, effect: NoSchedule, when: now}]}\n",
         "stages.sft.tolerations[0]"),
        ("stages:\n  sft: {node_selector: [a, b]}\n", "stages.sft.node_selector"),
        ("secrets: [{name: s3}]\n", "secrets[0]: expected a mapping with name and keys"),
        ("image_pull_policy: Sometimes\n", "image_pull_policy"),
        ("regsitry: x\n", "unknown field(s) ['regsitry']"),
    ],
)  # fmt: skip
def test_cluster_config_mistakes_name_the_file_and_field(tmp_path, text, message):
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        cluster.load_cluster_config(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_compile_cli_reports_a_bad_cluster_config(tmp_path, capsys):
    path = tmp_path / "cluster.yaml"
    path.write_text("stages:\n  sft: {gpu_count: 2}\n")
    assert main(["compile", "--out", str(tmp_path / "out"), "--cluster-config", str(path)]) == 2
    assert "unknown field(s) ['gpu_count']" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_local_runs_build_the_pipeline_without_cluster_settings(tmp_path):
    for name, pipeline in PIPELINES.items():
        path = tmp_path / f"{name}.yaml"
        compiler.Compiler().compile(cluster.build(pipeline, cluster.LOCAL), str(path))
        docs = list(yaml.safe_load_all(path.read_text()))
        assert len(docs) == 1, "no kubernetes platform spec"
        for task in _tasks(docs[0]).values():
            assert "retryPolicy" not in task
        for executor in docs[0]["deploymentSpec"]["executors"].values():
            # the collect pipeline's importer (a given model) has no container
            assert "resources" not in executor.get("container", {})


def test_committed_packages_manifests_and_component_specs_are_up_to_date(tmp_path):
    """pipelines/ and components/ are what users upload and reuse: they must match the code."""
    fresh = compile_all(tmp_path / "pipelines", cluster.ClusterConfig(), tmp_path / "components")
    for path in fresh:
        committed = ROOT / path.relative_to(tmp_path)
        assert committed.exists(), f"{committed} missing: run `make compile`"
        assert load_without_sdk_version(committed.read_text()) == load_without_sdk_version(
            path.read_text()
        ), f"{committed} is stale: run `make compile`"
    expected = {p.relative_to(tmp_path) for p in fresh}
    committed = {
        p.relative_to(ROOT)
        for folder in ("pipelines", "components")
        for p in (ROOT / folder).rglob("*.yaml")
    }
    assert committed == expected, f"left over from removed code: {sorted(committed - expected)}"


def test_component_specs_load_and_compose_into_another_pipeline(tmp_path):
    specs = sorted((ROOT / "components").glob("*.yaml"))
    assert {p.stem for p in specs} == set(stage_components())
    loaded = {p.stem: components.load_component_from_file(str(p)) for p in specs}
    for name, component in stage_components().items():
        assert loaded[name].component_spec == component.component_spec, name
    prepare, sft = loaded["prepare"], loaded["sft"]

    @dsl.pipeline(name="reuse-two-stages")
    def reuse(sft_data: list):
        prep = prepare(
            sft_data=sft_data, preferences_data=[], prompts_data=[], eval_prompts_data=[],
            unpaired_data=[], overrides={}, demo_overrides={}, pipeline_run="r",
            mlflow_experiment="e", track=False,
        )  # fmt: skip
        sft(
            base_model="preset:tiny-llama", seed=0, max_length=64, epochs=1, lr=1e-4,
            batch_size=4, overrides={}, pipeline_run="r", mlflow_experiment="e", track=False,
            data=prep.outputs["sft"],
        )  # fmt: skip

    compiler.Compiler().compile(reuse, str(tmp_path / "reuse.yaml"))
    spec = yaml.safe_load((tmp_path / "reuse.yaml").read_text())
    assert set(_tasks(spec)) == {"prepare", "sft"}
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {cluster.ClusterConfig().image("cpu"), cluster.ClusterConfig().image("cuda")}


def test_k8s_manifests_pass_a_kubernetes_schema_check():
    version = kubernetes_validate.latest_version()
    k8s = ROOT / "pipelines" / "k8s"
    job_docs = [d for d in yaml.safe_load_all((k8s / "submit-run.yaml").read_text()) if d]
    assert [d["kind"] for d in job_docs] == ["Job"]  # created per run; its name is generated
    assert "generateName" in job_docs[0]["metadata"]
    # The RBAC is applied, so applying it again (a second user, a rerun) is no error.
    job_docs += [d for d in yaml.safe_load_all((k8s / "submitter-rbac.yaml").read_text()) if d]
    assert [d["kind"] for d in job_docs[1:]] == ["ServiceAccount", "Role", "RoleBinding"]
    for doc in job_docs:
        kubernetes_validate.validate(doc, version, strict=True)
    job = job_docs[0]["spec"]["template"]["spec"]
    assert job["serviceAccountName"] == job_docs[1]["metadata"]["name"]  # the ServiceAccount
    assert job["containers"][0]["command"][:2] == ["rlhf", "submit"]
    assert job["containers"][0]["image"] == cluster.ClusterConfig().image("cpu")

    # Pipeline / PipelineVersion are KFP's CRDs (no schema in kubernetes-validate): check the
    # parts Kubernetes and KFP rely on, and that the version holds exactly the package's spec.
    for name in PIPELINES:
        pipeline, pv = yaml.safe_load_all((k8s / f"{name}.yaml").read_text())
        spec, platform = yaml.safe_load_all((ROOT / "pipelines" / f"{name}.yaml").read_text())
        assert pipeline["apiVersion"] == pv["apiVersion"] == "pipelines.kubeflow.org/v2beta1"
        assert (pipeline["kind"], pv["kind"]) == ("Pipeline", "PipelineVersion")
        for doc in (pipeline, pv):
            assert DNS_1123.match(doc["metadata"]["name"]) and len(doc["metadata"]["name"]) <= 63
        # Kubernetes names have no underscores: online_dpo is the resource online-dpo.
        assert pipeline["metadata"]["name"] == pv["spec"]["pipelineName"] == k8s_name(name)
        package_text = (ROOT / "pipelines" / f"{name}.yaml").read_text()
        assert pv["metadata"]["name"] == version_name(name, package_text)
        assert pv["spec"]["pipelineSpec"] == spec
        assert pv["spec"]["platformSpec"] == platform


def test_a_broken_manifest_fails_the_schema_check():
    """The check above can fail: a Job with a wrongly typed field is rejected."""
    job = [d for d in yaml.safe_load_all((ROOT / "pipelines/k8s/submit-run.yaml").read_text())][-1]
    job["spec"]["backoffLimit"] = "none"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, kubernetes_validate.latest_version(), strict=True)


def test_stage_resources_defaults_are_documented_per_stage():
    """docs/configuration.md shows each stage's defaults; keep the table in step."""
    text = (ROOT / "docs" / "configuration.md").read_text()
    for stage, resources in cluster.default_stages().items():
        row = next((line for line in text.splitlines() if line.startswith(f"| `{stage}` |")
                    and line.count("|") == len(STAGE_COLUMNS) + 2), None)  # fmt: skip
        assert row is not None, f"docs/configuration.md: no row for stage {stage}"
        cells = [c.strip().strip("`") for c in row.strip("|").split("|")]
        shown = dict(zip(STAGE_COLUMNS, cells[1:], strict=True))
        for field, value in shown.items():
            expected = getattr(resources, field)
            if isinstance(expected, (list, dict)):
                expected = yaml.safe_dump(expected, default_flow_style=True).strip()
            assert value == str(expected).replace("True", "true").replace("False", "false"), (
                f"docs/configuration.md: stage {stage} {field}: {value} vs {expected}"
            )


STAGE_COLUMNS = [
    f.name for f in dataclasses.fields(cluster.StageResources)
    if f.name not in ("tolerations", "node_selector", "retry_backoff_factor", "retry_backoff_max",
                      "nodes", "trainjob_runtime")  # the same for every stage: said in the text
]  # fmt: skip


def test_version_name_follows_the_pipeline_not_the_kfp_release():
    text = (ROOT / "pipelines" / "ppo.yaml").read_text()
    assert "sdkVersion: kfp-" in text
    restamped = text.replace("sdkVersion: kfp-", "sdkVersion: kfp-9.9.9-was-")
    assert version_name("ppo", restamped) == version_name("ppo", text)
    changed = text.replace("ppo_iterations", "ppo_iterations_renamed")
    assert version_name("ppo", changed) != version_name("ppo", text)


def test_a_node_selector_label_with_dots_is_kept_as_written():
    """Labels are dotted (nvidia.com/gpu.product): a mapping field's keys are not config paths."""
    label = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    config = cluster.cluster_config_from_dict({"stages": {"sft": {"node_selector": label}}})
    assert config.stages["sft"].node_selector == label
