"""`rlhf submit` and `rlhf schedule` through the real kfp.Client, against a recording stand-in
of the KFP REST API on 127.0.0.1: the requests a cluster would receive."""

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kfp_api_server import KfpApiServer

from rlhf.cli import main
from rlhf.pipeline.cluster import ClusterConfig
from rlhf.pipeline.compile import compile_package, k8s_name, version_name
from rlhf.pipeline.k8s_manifests import RUN_CONFIG_MAP
from rlhf.pipeline.pipelines import PIPELINES, stage_sections
from rlhf.pipeline.run_config import stage_configs
from rlhf.pipeline.schedule import CronError, parse_interval, validate_cron
from rlhf.pipeline.submit import Connection, connect
from rlhf.stages.specs import STAGES, pipeline_parameter

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def kfp_api(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # kfp.Client reads ~/.config/kfp/context.json
    monkeypatch.delenv("KF_PIPELINES_ENDPOINT", raising=False)
    monkeypatch.delenv("KF_PIPELINES_TOKEN", raising=False)
    with KfpApiServer() as server:
        yield server


@pytest.fixture
def run_config(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "data": {"sft": "s3://bucket/sft.jsonl", "preferences": "s3://bucket/prefs"},
                "sft": {"epochs": 2, "warmup_ratio": 0.05},
                "pipeline": {"mlflow_experiment": "retrain"},
            }
        )
    )
    return path


def _client(server):
    """A kfp.Client of its own on the stand-in, the way ``rlhf submit`` connects."""
    return connect(Connection(host=server.url))


def _package(server, request) -> dict:
    return yaml.safe_load(request.body["uploadfile"].split("\n---\n")[0])


def test_submit_uploads_the_pipeline_and_creates_a_run(kfp_api, run_config, monkeypatch, capsys):
    monkeypatch.setenv("KF_PIPELINES_TOKEN", "sekret-token")
    code = main(["submit", "--host", kfp_api.url, "--config", str(run_config),
                 "--set", "ppo.kl_coef=0.2", "--experiment", "nightly", "--run-name", "r1",
                 "--wait", "--poll", "0.01"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "SUCCEEDED" in out

    s = kfp_api.state
    # The token goes in the Authorization header, never in a body.
    assert all(r.headers.get("authorization") == "Bearer sekret-token" for r in s.requests)
    assert "sekret-token" not in str([r.body for r in s.requests])

    # First submit: the pipeline alone (CreatePipeline), then the version named after the
    # package's digest, and nothing else: no upload that would add a version named "ppo".
    (create,) = s.sent("POST", "/pipelines")
    assert create.body == {"display_name": "ppo"}  # no namespace: a shared pipeline
    assert s.sent("POST", "/pipelines/upload") == []
    (pipeline_id,) = s.pipelines
    (version,) = s.sent("POST", "/pipelines/upload_version")
    assert version.query["pipelineid"] == pipeline_id
    text = version.body["uploadfile"]
    assert version.query["name"] == version_name("ppo", text)
    listed = _client(kfp_api).list_pipeline_versions(pipeline_id).pipeline_versions
    assert [v.display_name for v in listed] == [version.query["name"]]
    spec = _package(kfp_api, version)
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {"ghcr.io/rlhf-project/rlhf:0.1.0-cpu", "ghcr.io/rlhf-project/rlhf:0.1.0-cuda"}

    (exp,) = s.sent("POST", "/experiments")
    assert exp.body["display_name"] == "nightly"
    (run,) = s.sent("POST", "/runs")
    assert run.body["display_name"] == "r1"
    assert run.body["experiment_id"] == next(iter(s.experiments))
    ref = run.body["pipeline_version_reference"]
    assert ref["pipeline_version_id"] in s.versions
    assert s.versions[ref["pipeline_version_id"]]["display_name"] == version.query["name"]
    params = run.body["runtime_config"]["parameters"]
    assert params["sft_data"] == ["s3://bucket/sft.jsonl"]
    assert params["preferences_data"] == ["s3://bucket/prefs"]
    assert params["sft_epochs"] == 2
    assert params["ppo_kl_coef"] == 0.2
    assert params["sft_overrides"] == {"warmup_ratio": 0.05}
    assert params["mlflow_experiment"] == "retrain"
    assert "pipeline_run" not in params  # the compiled default: KFP's run id

    # Same code, same cluster config: the version is reused; the run is new.
    assert main(["submit", "--host", kfp_api.url, "--experiment", "nightly"]) == 0
    assert len(s.sent("POST", "/pipelines/upload_version")) == 1
    assert len(s.sent("POST", "/pipelines")) == 1
    assert s.sent("POST", "/pipelines/upload") == []
    assert len(_client(kfp_api).list_pipeline_versions(pipeline_id).pipeline_versions) == 1
    assert len(s.sent("POST", "/experiments")) == 1  # found by name
    assert len(s.sent("POST", "/runs")) == 2
    assert "reused" in capsys.readouterr().out


def test_submit_with_another_cluster_config_uploads_a_new_version(kfp_api, tmp_path):
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text("registry: registry.example.com/ml\nstages:\n  sft: {gpus: 4}\n")
    assert main(["submit", "--host", kfp_api.url]) == 0
    assert main(["submit", "--host", kfp_api.url, "--cluster-config", str(cluster)]) == 0
    first, second = kfp_api.state.sent("POST", "/pipelines/upload_version")
    assert first.query["name"] != second.query["name"]
    (pipeline_id,) = kfp_api.state.pipelines  # one pipeline, created once, with two versions
    assert len(kfp_api.state.sent("POST", "/pipelines")) == 1
    listed = _client(kfp_api).list_pipeline_versions(pipeline_id).pipeline_versions
    assert sorted(v.display_name for v in listed) == sorted(
        [first.query["name"], second.query["name"]]
    )
    spec = _package(kfp_api, second)
    sft = spec["deploymentSpec"]["executors"]["exec-sft"]["container"]
    assert sft["image"] == "registry.example.com/ml/rlhf:0.1.0-cuda"
    assert sft["resources"]["accelerator"]["resourceCount"] == "4"


def test_submit_in_a_profile_namespace(kfp_api):
    """Multi-user KFP: the pipeline is looked up and uploaded in the namespace, and the
    experiment (which the run belongs to) is created there."""
    assert main(["submit", "--host", kfp_api.url, "--namespace", "team-a"]) == 0
    s = kfp_api.state
    assert s.sent("GET", "/pipelines")[0].query["namespace"] == "team-a"
    assert s.sent("POST", "/pipelines")[0].body == {"display_name": "ppo", "namespace": "team-a"}
    assert s.sent("GET", "/experiments")[0].query["namespace"] == "team-a"
    assert s.sent("POST", "/experiments")[0].body["namespace"] == "team-a"
    assert main(["submit", "--host", kfp_api.url, "--namespace", "team-a"]) == 0
    assert len(s.sent("POST", "/pipelines")) == 1  # found in its namespace
    assert len(s.sent("POST", "/pipelines/upload_version")) == 1
    assert s.sent("POST", "/pipelines/upload") == []


def test_submit_adds_the_version_to_an_existing_pipeline(kfp_api):
    """A pipeline of that name that exists already (made in the UI, or left with no version
    when a version's upload failed) gets the version; no second pipeline is created."""
    kfp_api.state.pipelines["pipeline-0"] = {
        "pipeline_id": "pipeline-0", "display_name": "ppo", "namespace": ""
    }  # fmt: skip
    assert main(["submit", "--host", kfp_api.url]) == 0
    s = kfp_api.state
    assert s.sent("POST", "/pipelines") == [] and s.sent("POST", "/pipelines/upload") == []
    (version,) = s.sent("POST", "/pipelines/upload_version")
    assert version.query["pipelineid"] == "pipeline-0"
    assert [v["pipeline_id"] for v in s.versions.values()] == ["pipeline-0"]


def test_submit_wait_reports_a_failed_run(kfp_api, capsys):
    kfp_api.state.run_states = ["RUNNING", "RUNNING", "FAILED"]
    assert main(["submit", "--host", kfp_api.url, "--wait", "--poll", "0.01"]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_submit_rejects_bad_configs_before_any_request(kfp_api, tmp_path, capsys):
    code = main(["submit", "--host", kfp_api.url, "--set", "sft.epochz=1"])
    assert code == 2
    assert "unknown field" in capsys.readouterr().err
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text("stages:\n  ppo: {retries: often}\n")
    code = main(["schedule", "create", "--host", kfp_api.url, "--cron", "@daily",
                 "--cluster-config", str(cluster)])  # fmt: skip
    assert code == 2
    assert f"{cluster}: stages.ppo" in capsys.readouterr().err
    assert kfp_api.state.requests == []


def test_schedule_create_list_disable(kfp_api, run_config, capsys):
    code = main(["schedule", "create", "--host", kfp_api.url, "--config", str(run_config),
                 "--cron", "0 0 3 * * *", "--name", "nightly-retrain"])  # fmt: skip
    assert code == 0
    (req,) = kfp_api.state.sent("POST", "/recurringruns")
    body = req.body
    assert body["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * *"}}
    assert int(body["max_concurrency"]) == 1
    assert body["no_catchup"] is True
    assert body["mode"] == "ENABLE"
    assert body["display_name"] == "nightly-retrain"
    assert body["runtime_config"]["parameters"]["sft_epochs"] == 2
    assert body["pipeline_version_reference"]["pipeline_version_id"] in kfp_api.state.versions

    code = main(["schedule", "create", "--host", kfp_api.url, "--interval", "12h",
                 "--max-concurrency", "2", "--catchup", "--name", "twice-a-day"])  # fmt: skip
    assert code == 0
    body = kfp_api.state.sent("POST", "/recurringruns")[1].body
    assert int(body["trigger"]["periodic_schedule"]["interval_second"]) == 12 * 3600
    assert int(body["max_concurrency"]) == 2
    assert body["no_catchup"] is False
    capsys.readouterr()

    assert main(["schedule", "list", "--host", kfp_api.url]) == 0
    out = capsys.readouterr().out
    assert "nightly-retrain  ENABLED  cron 0 0 3 * * *" in out
    assert "twice-a-day  ENABLED  every 43200 s" in out

    assert main(["schedule", "disable", "nightly-retrain", "--host", kfp_api.url]) == 0
    (disable,) = kfp_api.state.sent("POST", ":disable")
    nightly = next(
        k for k, v in kfp_api.state.recurring_runs.items() if v["display_name"] == "nightly-retrain"
    )
    assert disable.path.endswith(f"/recurringruns/{nightly}:disable")
    assert main(["schedule", "disable", "nope", "--host", kfp_api.url]) == 2
    assert "no schedule with id or name 'nope'" in capsys.readouterr().err


def test_schedule_create_replace_moves_the_schedule_to_the_new_version(kfp_api, run_config,
                                                                       capsys):  # fmt: skip
    """What the Helm chart's hook runs on every install and upgrade: one schedule of that name
    remains, on the version just uploaded; other schedules are left alone."""
    flags = ["--host", kfp_api.url, "--config", str(run_config), "--cron", "0 0 3 * * *"]
    assert main(["schedule", "create", *flags, "--name", "other"]) == 0
    for epochs in (2, 3):
        assert main(["schedule", "create", *flags, "--name", "nightly", "--replace",
                     "--set", f"sft.epochs={epochs}"]) == 0  # fmt: skip
    nightly = [r for r in kfp_api.state.recurring_runs.values() if r["display_name"] == "nightly"]
    assert len(nightly) == 1
    assert nightly[0]["runtime_config"]["parameters"]["sft_epochs"] == 3
    assert [r["display_name"] for r in kfp_api.state.recurring_runs.values()].count("other") == 1
    assert [r.method for r in kfp_api.state.requests].count("DELETE") == 1
    assert "deleted the earlier schedule" in capsys.readouterr().out


def test_schedule_with_a_crontab_expression_is_rejected_before_any_request(kfp_api, capsys):
    code = main(["schedule", "create", "--host", kfp_api.url, "--cron", "0 3 * * *"])
    assert code == 2
    err = capsys.readouterr().err
    assert "has 5 fields" in err and "'0 0 3 * * *'" in err and "seconds first" in err
    assert kfp_api.state.requests == []


@pytest.mark.parametrize(
    "expr, expected",
    [
        ("0 0 3 * * *", "0 0 3 * * *"),
        ("  0 30 2 * * MON ", "0 30 2 * * MON"),
        ("0 0 */6 * * *", "0 0 */6 * * *"),
        ("0 0 0 1,15 * ?", "0 0 0 1,15 * ?"),
        ("0 0 9-17/2 * JAN-MAR mon-fri", "0 0 9-17/2 * JAN-MAR mon-fri"),
        ("@daily", "0 0 0 * * *"),
        ("@weekly", "0 0 0 * * 0"),
    ],
)
def test_valid_cron_expressions(expr, expected):
    assert validate_cron(expr) == expected


@pytest.mark.parametrize(
    "expr, message",
    [
        ("0 3 * * *", "Add the seconds in front: '0 0 3 * * *'"),
        ("0 0 3 * *", "has 5 fields"),
        ("0 0 3 * * * *", "has 7 fields"),
        ("60 0 3 * * *", "second 60 is out of range 0-59"),
        ("0 0 24 * * *", "hour 24 is out of range 0-23"),
        ("0 0 3 0 * *", "day-of-month 0 is out of range 1-31"),
        ("0 0 3 * 13 *", "month 13 is out of range 1-12"),
        ("0 0 3 * * 7", "day-of-week 7 is out of range 0-6"),
        ("0 0 3 * * FUNDAY", "day-of-week field: 'FUNDAY' is not a number"),
        ("0 ? 3 * * *", "minute field: '?' is not a number"),
        ("0 0 */0 * * *", "step '0' must be a positive number"),
        ("0 0 5-3 * * *", "runs backwards"),
        ("@fortnightly", "unknown descriptor"),
    ],
)
def test_invalid_cron_expressions_explain_the_format(expr, message):
    with pytest.raises(CronError) as err:
        validate_cron(expr)
    assert message in str(err.value)


def test_intervals():
    assert parse_interval("3600") == 3600
    assert parse_interval("90m") == 5400
    assert parse_interval("7d") == 7 * 86400
    for bad in ("0", "-5", "1w", "h"):
        with pytest.raises(ValueError, match="interval"):
            parse_interval(bad)


# A run config with a section for every stage: each pipeline must take the sections of its own
# stages and leave the others out (one file serves every pipeline, as for `rlhf run`).
EVERY_SECTION = {
    "data": {"sft": "s3://bucket/sft.jsonl", "preferences": "s3://bucket/prefs"},
    "pipeline": {"mlflow_experiment": "retrain", "seed": 7},
    "sft": {"epochs": 2, "warmup_ratio": 0.05},
    "reward": {"lr": "5e-4", "head": "scalar"},  # "5e-4": YAML reads a string; sent as a float
    "ppo": {"kl_coef": 0.1, "critic_lr": 3e-5},
    "dpo": {"beta": 0.5, "label_smoothing": 0.1},
    "grpo": {"group_size": 4, "scale_advantages": True},
    "kto": {"beta": 0.2, "undesirable_weight": 1.2},
    "online_dpo": {"beta": 0.4, "pairs": "all"},
    "candidates": {"k": 3, "redraws": 2},
    "evaluate": {"samples_per_prompt": 2, "max_prompts": 50},
}
_COMMON = {
    "sft_data": ["s3://bucket/sft.jsonl"],
    "preferences_data": ["s3://bucket/prefs"],
    "mlflow_experiment": "retrain",
    "seed": 7,
    "prepare_overrides": {},
    "demo_overrides": {},
    "sft_epochs": 2,
    "sft_overrides": {"warmup_ratio": 0.05},
    "evaluate_samples_per_prompt": 2,
    "evaluate_overrides": {"max_prompts": 50},
    "deploy_overrides": {},  # every stage section of the pipeline, set or not
}
_REWARD = {"reward_lr": 5e-4, "reward_overrides": {"head": "scalar"}}
# The parameters each pipeline's run must carry for EVERY_SECTION, worked out by hand from the
# named parameters (docs/cli.md) and the pipelines' signatures. A new pipeline needs its entry.
EXPECTED_PARAMETERS = {
    "ppo": {**_COMMON, **_REWARD, "ppo_kl_coef": 0.1, "ppo_overrides": {"critic_lr": 3e-5}},
    "dpo": {**_COMMON, "dpo_beta": 0.5, "dpo_overrides": {"label_smoothing": 0.1}},
    "grpo": {
        **_COMMON,
        **_REWARD,
        "grpo_group_size": 4,
        "grpo_overrides": {"scale_advantages": True},
    },
    # The kto pipeline's own prepare_overrides default stays (no prepare section here).
    "kto": {
        **_COMMON,
        "prepare_overrides": {"unpaired_from_preferences": True},
        "kto_beta": 0.2,
        "kto_overrides": {"undesirable_weight": 1.2},
    },
    "online_dpo": {
        **_COMMON,
        **_REWARD,
        "online_dpo_beta": 0.4,
        "online_dpo_overrides": {"pairs": "all"},
    },
    # No evaluation or deploy step in collect: those sections are left out.
    "collect": {
        **{k: v for k, v in _COMMON.items() if not k.startswith(("evaluate_", "deploy_"))},
        "candidates_k": 3,
        "candidates_overrides": {"redraws": 2},
    },
}


@pytest.fixture
def every_section_config(tmp_path):
    path = tmp_path / "every-section.yaml"
    path.write_text(yaml.safe_dump(EVERY_SECTION))
    return path


@pytest.fixture(scope="module")
def compiled_packages(tmp_path_factory):
    """Each pipeline compiled with the default cluster config: what its upload must hold."""
    folder = tmp_path_factory.mktemp("packages")
    return {
        name: compile_package(name, folder / f"{name}.yaml", ClusterConfig()).read_text("utf-8")
        for name in PIPELINES
    }


def _check_upload(state, pipeline: str, package: str) -> str:
    """One pipeline named ``pipeline`` holding one version whose package is ``package``;
    returns the version's id."""
    (created,) = state.sent("POST", "/pipelines")
    assert created.body == {"display_name": pipeline}
    (pipeline_id,) = state.pipelines
    (upload,) = state.sent("POST", "/pipelines/upload_version")
    assert upload.query["pipelineid"] == pipeline_id
    assert upload.body["uploadfile"] == package
    assert upload.query["name"] == version_name(pipeline, package)
    assert (
        yaml.safe_load(package.split("\n---\n")[0])["pipelineInfo"]["name"]
        == f"rlhf-{k8s_name(pipeline)}"
    )
    (version_id,) = state.versions
    assert state.versions[version_id]["pipeline_id"] == pipeline_id
    return version_id


def _check_parameters(pipeline: str, params: dict) -> None:
    assert set(params) <= set(inspect.signature(PIPELINES[pipeline].pipeline_func).parameters)
    others = set(stage_configs()) - set(stage_sections(pipeline))  # e.g. reward, ppo, grpo for dpo
    foreign = {f"{s}_overrides" for s in others}
    foreign |= {
        pipeline_parameter(s, f) for s in others & set(STAGES) for f in STAGES[s].parameters
    } - {"seed", "max_length", "gold_reward"}
    assert not foreign & set(params), f"{pipeline}: another pipeline's parameters"
    assert pipeline in EXPECTED_PARAMETERS, f"EXPECTED_PARAMETERS needs an entry for {pipeline}"
    assert params == EXPECTED_PARAMETERS[pipeline]


@pytest.mark.parametrize("pipeline", sorted(PIPELINES))
def test_submit_sends_the_asked_pipeline_and_its_parameters(
    kfp_api, every_section_config, compiled_packages, pipeline, capsys
):
    code = main(["submit", "--host", kfp_api.url, "--pipeline", pipeline,
                 "--config", str(every_section_config), "--experiment", "nightly"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    s = kfp_api.state
    version_id = _check_upload(s, pipeline, compiled_packages[pipeline])
    (run,) = s.sent("POST", "/runs")
    assert run.body["display_name"].startswith(f"{pipeline}-")
    assert run.body["pipeline_version_reference"]["pipeline_version_id"] == version_id
    _check_parameters(pipeline, run.body["runtime_config"]["parameters"])


@pytest.mark.parametrize("pipeline", sorted(PIPELINES))
def test_schedule_sends_the_asked_pipeline_and_its_parameters(
    kfp_api, every_section_config, compiled_packages, pipeline, capsys
):
    code = main(["schedule", "create", "--host", kfp_api.url, "--pipeline", pipeline,
                 "--config", str(every_section_config), "--cron", "@daily"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    s = kfp_api.state
    version_id = _check_upload(s, pipeline, compiled_packages[pipeline])
    (recurring,) = s.sent("POST", "/recurringruns")
    assert recurring.body["display_name"] == f"{pipeline}-retraining"
    assert recurring.body["pipeline_version_reference"]["pipeline_version_id"] == version_id
    _check_parameters(pipeline, recurring.body["runtime_config"]["parameters"])


def test_rlhf_command_submits_and_schedules_the_dpo_pipeline(kfp_api, every_section_config):
    """The `rlhf` entry point in a process of its own: a DPO run, then a DPO schedule that
    reuses the version the run uploaded."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), *sys.path])}

    def rlhf(*argv: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "rlhf.cli", *argv, "--host", kfp_api.url, "--pipeline", "dpo",
             "--config", str(every_section_config)],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    out = rlhf("submit", "--run-name", "dpo-1")
    assert "pipeline dpo: version dpo-" in out and "run: " in out
    out = rlhf("schedule", "create", "--interval", "7d", "--name", "weekly-dpo")
    assert "(reused;" in out and "schedule: " in out and "every 604800 s" in out
    s = kfp_api.state
    (pipeline_id,) = s.pipelines
    assert s.pipelines[pipeline_id]["display_name"] == "dpo"
    (version_id,) = s.versions
    (run,) = s.sent("POST", "/runs")
    (recurring,) = s.sent("POST", "/recurringruns")
    for body in (run.body, recurring.body):
        assert body["pipeline_version_reference"]["pipeline_version_id"] == version_id
        assert body["runtime_config"]["parameters"] == EXPECTED_PARAMETERS["dpo"]


def _kubelet_argv(container: dict, config_map: dict[str, str], folder: Path) -> list[str]:
    """The container's command as the kubelet runs it: ``$(VAR)`` replaced from the container's
    env (literal values, or keys of the ConfigMap), the ConfigMap's mount moved to ``folder``."""
    env = {}
    for var in container["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["configMapKeyRef"]
            assert ref["name"] == RUN_CONFIG_MAP and not ref.get("optional")
            env[var["name"]] = config_map[ref["key"]]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "run-config"]
    for key, text in config_map.items():
        (folder / key).write_text(text)
    return [
        re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], arg).replace(
            mount["mountPath"], str(folder)
        )
        for arg in container["command"]
    ]


@pytest.mark.parametrize("pipeline", sorted(PIPELINES))
def test_the_submit_job_submits_the_pipeline_its_config_map_names(
    kfp_api, tmp_path, compiled_packages, pipeline, capsys
):
    """pipelines/k8s/submit-run.yaml, run with a ConfigMap holding run.yaml, cluster.yaml and
    the pipeline's name: one Job for every pipeline."""
    docs = list(yaml.safe_load_all((ROOT / "pipelines/k8s/submit-run.yaml").read_text()))
    pod = docs[-1]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["volumes"][0]["configMap"]["name"] == RUN_CONFIG_MAP
    config_map = {
        "run.yaml": yaml.safe_dump(EVERY_SECTION), "cluster.yaml": "{}\n", "pipeline": pipeline
    }  # fmt: skip
    argv = _kubelet_argv(container, config_map, tmp_path)
    assert argv[:2] == ["rlhf", "submit"]
    assert main([*argv[1:], "--host", kfp_api.url]) == 0, capsys.readouterr().err
    version_id = _check_upload(kfp_api.state, pipeline, compiled_packages[pipeline])
    (run,) = kfp_api.state.sent("POST", "/runs")
    assert run.body["pipeline_version_reference"]["pipeline_version_id"] == version_id
    _check_parameters(pipeline, run.body["runtime_config"]["parameters"])
