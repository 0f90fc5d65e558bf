"""`rlhf submit` and `rlhf schedule` through the real kfp.Client, against a recording stand-in
of the KFP REST API on 127.0.0.1: the requests a cluster would receive."""

import pytest
import yaml
from kfp_api_server import KfpApiServer

from rlhf.cli import main
from rlhf.pipeline.compile import version_name
from rlhf.pipeline.schedule import CronError, parse_interval, validate_cron
from rlhf.pipeline.submit import Connection, connect


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
    assert params["sft_data"] == "s3://bucket/sft.jsonl"
    assert params["preference_data"] == "s3://bucket/prefs"
    assert params["sft_epochs"] == 2
    assert params["kl_coef"] == 0.2
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
    cluster.write_text(
        "registry: registry.example.com/ml\nstages:\n  sft: {accelerator_count: 4}\n"
    )
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
    sft = spec["deploymentSpec"]["executors"]["exec-supervised-finetune"]["container"]
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
