"""The whole pipeline (tiny sizes) against the two servers: data and the base model read from
S3, every output published to S3 with a manifest, every stage tracked on the MLflow server
(artifacts proxied to S3), the policy registered as champion; and nothing it wrote anywhere
holds the credentials."""

from __future__ import annotations

import json
import uuid

import pytest
import yaml
from mlflow.tracking import MlflowClient
from run_console import assert_run_console
from servers import ARTIFACT_BUCKET, FAKE_CREDENTIALS, s3

from rlhf import storage, tracking
from rlhf.cli import main
from rlhf.config import DemoConfig
from rlhf.pipeline.compile import compile_all
from rlhf.pipeline.run_config import pipeline_arguments

STAGE_FOLDERS = (
    "data/sft", "data/preferences", "data/prompts", "data/eval_prompts",
    "sft", "reward_model", "policy", "evaluate",
)  # fmt: skip


def tiny_config(bucket: str, run: str, name: str) -> dict:
    return {
        "data": {
            kind: f"s3://{bucket}/data/{kind}.jsonl"
            for kind in ("sft", "preferences", "prompts", "eval_prompts")
        },
        "pipeline": {
            "pipeline_run": run,
            "publish_to": f"s3://{bucket}/runs",
            "gold_reward": "rlhf.data.demo_task:gold_reward",
        },
        "sft": {"base_model": f"s3://{bucket}/models/base", "epochs": 1, "batch_size": 16},
        "reward": {"epochs": 1, "batch_size": 16, "eval_every": 0},
        "ppo": {"iterations": 2, "rollout_batch_size": 8, "minibatch_size": 4, "ppo_epochs": 1,
                "max_new_tokens": 8},
        "evaluate": {"max_prompts": 4, "samples_per_prompt": 2, "max_new_tokens": 8,
                 "registered_policy": name, "registered_reward_model": f"{name}-rm",
                 "gate_min_samples": 1},
    }  # fmt: skip


def bucket_bytes(bucket: str) -> dict[str, bytes]:
    client = s3()
    keys = [
        o["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for o in page.get("Contents", [])
    ]
    return {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def leaks(sources: dict[str, bytes]) -> list[str]:
    """``source: credential`` for every source that contains one of the fake credentials."""
    return [
        f"{where}: {secret[:6]}..."
        for where, data in sources.items()
        for secret in FAKE_CREDENTIALS
        if secret.encode() in data
    ]


def test_pipeline_reads_and_publishes_s3_tracks_on_server_and_never_leaks_credentials(
    tracking_server, bucket, micro_models, tmp_path, capfd
):
    from rlhf.data.demo_task import write_demo_files

    demo = DemoConfig(sft_rows=120, preference_rows=120, prompt_rows=20, eval_prompt_rows=10)
    for kind, path in write_demo_files(tmp_path / "demo", demo).items():
        storage.publish(path, f"s3://{bucket}/data/{kind}.jsonl")
    assert main(["publish", micro_models["sft"], f"s3://{bucket}/models/base"]) == 0

    run_key = f"s3-e2e-{uuid.uuid4().hex[:8]}"
    name = f"policy-{uuid.uuid4().hex[:8]}"
    config = tiny_config(bucket, run_key, name)
    config_file = tmp_path / "run.yaml"
    config_file.write_text(yaml.safe_dump(config))
    assert main(["run", "--config", str(config_file), "--output-root", str(tmp_path / "out")]) == 0
    (run_dir,) = (tmp_path / "out").iterdir()
    printed = capfd.readouterr()
    assert_run_console(printed.out, ("prepare", "sft", "reward", "ppo", "evaluate"), 7, 2)
    assert f"published:    s3://{bucket}/runs/{run_key}/" in printed.out

    # Every output is published, complete: each object the manifest lists is there.
    objects = bucket_bytes(bucket)
    for folder in STAGE_FOLDERS:
        prefix = f"runs/{run_key}/{folder}"
        manifest = json.loads(objects[f"{prefix}/manifest.json"])
        for entry in manifest["files"]:
            assert len(objects[f"{prefix}/{entry['path']}"]) == entry["bytes"], entry
    policy = storage.local_path(f"s3://{bucket}/runs/{run_key}/policy")
    assert (policy / "model.safetensors").is_file()
    gate = json.loads(objects[f"runs/{run_key}/evaluate/gate.json"])
    assert gate["alias"] == "champion" and gate["win_rate"] is None  # the first model

    # Every stage is tracked on the server; model folders went to S3 through it.
    client = MlflowClient(tracking_server)
    (parent,) = client.search_runs(
        [client.get_experiment_by_name("rlhf").experiment_id],
        filter_string=f"tags.`{tracking.PIPELINE_RUN_TAG}` = '{run_key}'",
    )
    assert parent.info.status == "FINISHED"
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    stages = {r.data.tags["rlhf.stage"]: r for r in children}
    assert set(stages) == {"prepare", "sft", "reward", "ppo", "evaluate"}
    assert all(r.info.status == "FINISHED" for r in children)
    assert stages["sft"].data.params["sft.base_model"] == f"s3://{bucket}/models/base"
    assert stages["sft"].data.tags["rlhf.published.model"] == f"s3://{bucket}/runs/{run_key}/sft"
    ppo = stages["ppo"]
    logged = [k for k in s3_keys(ARTIFACT_BUCKET) if ppo.info.run_id in k]
    assert any(k.endswith("/artifacts/model/model.safetensors") for k in logged)

    # The policy is registered as champion: an MLflow model logged into the evaluation run,
    # built from the PPO run's folder (its tag names that run).
    version = client.get_model_version_by_alias(name, "champion")
    assert version.run_id == stages["evaluate"].info.run_id
    assert version.source == f"{stages['evaluate'].info.artifact_uri}/registered/policy"
    assert version.tags["rlhf.training_run"] == ppo.info.run_id
    assert version.tags["rlhf.pipeline_run"] == run_key
    prompts_manifest = json.loads(objects[f"runs/{run_key}/data/prompts/manifest.json"])
    assert version.tags["rlhf.data_sha256.policy"] == prompts_manifest["content_sha256"]
    assert "eval.win_rate_gold" in version.tags
    reward_version = client.get_model_version_by_alias(f"{name}-rm", "champion")
    assert reward_version.tags["rlhf.training_run"] == stages["reward"].info.run_id

    # Secrets: scan everything the run wrote for the fake credentials.
    out, err = capfd.readouterr()
    sources: dict[str, bytes] = {
        "stdout": (printed.out + out).encode(),
        "stderr": (printed.err + err).encode(),
    }
    for path in run_dir.rglob("*"):
        if path.is_file():
            sources[str(path)] = path.read_bytes()
    for bucket_name in (bucket, ARTIFACT_BUCKET):
        sources.update({f"s3://{bucket_name}/{k}": v for k, v in bucket_bytes(bucket_name).items()})
    for run in [parent, *children]:
        run = client.get_run(run.info.run_id)
        sources[f"run {run.info.run_id}"] = json.dumps(
            [run.data.params, run.data.tags, run.data.metrics]
        ).encode()
    for model in (name, f"{name}-rm"):
        for v in client.search_model_versions(f"name = '{model}'"):
            sources[f"version {v.name}/{v.version}"] = json.dumps([v.tags, v.source]).encode()
    sources["pipeline arguments"] = json.dumps(pipeline_arguments(config, "ppo")).encode()
    for compiled in compile_all(tmp_path / "compiled"):
        sources[str(compiled)] = compiled.read_bytes()
    assert len(sources) > 50
    assert not leaks(sources), leaks(sources)
    # The scan itself would have caught one.
    assert leaks({"canary": f"key={FAKE_CREDENTIALS[1]}".encode()})


def s3_keys(bucket: str) -> list[str]:
    pages = s3().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def test_storage_errors_never_show_credentials(s3_server, capsys):
    """Even a failure that botocore words itself (a missing bucket) reaches the user redacted,
    and the CLI exits with one line."""
    status = main(["publish", __file__, "s3://no-such-bucket-rlhf/x.py"])
    err = capsys.readouterr().err
    assert status == 1 and "s3://no-such-bucket-rlhf/x.py" in err
    assert not any(secret in err for secret in FAKE_CREDENTIALS)


@pytest.fixture(autouse=True)
def _no_progress_bars(monkeypatch):
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
