"""The whole pipeline through kfp.local, tracked in a real MLflow store, on a tiny config, and
what `rlhf run` shows while it runs."""

import json
import re
import shutil

import pytest
import yaml
from mlflow.tracking import MlflowClient
from run_console import assert_run_console

from rlhf import tracking
from rlhf.cli import main
from rlhf.pipeline.local_run import run_local
from rlhf.pipeline.run_config import pipeline_arguments

TINY = {
    "demo": {"sft_rows": 120, "preference_rows": 120, "prompt_rows": 20, "eval_prompt_rows": 10},
    "sft": {"base_model": "preset:micro-llama", "epochs": 1, "batch_size": 16, "log_every": 2},
    "reward": {"epochs": 1, "batch_size": 16, "eval_every": 0},
    "ppo": {"iterations": 2, "rollout_batch_size": 8, "minibatch_size": 4, "ppo_epochs": 1,
            "max_new_tokens": 8},
    "evaluate": {"max_prompts": 4, "samples_per_prompt": 2, "max_new_tokens": 8},
}  # fmt: skip
# The same file drives the other pipelines: their sections are added, PPO's is then unused.
TINY_ALL = {
    **TINY,
    "dpo": {"max_steps": 2, "batch_size": 8, "eval_batch_size": 32},
    "grpo": {"iterations": 2, "prompts_per_iteration": 2, "group_size": 4, "minibatch_size": 8,
             "grpo_epochs": 1, "max_new_tokens": 8},
    "online_dpo": {"iterations": 2, "prompts_per_iteration": 2, "samples_per_prompt": 4,
                   "minibatch_size": 2, "dpo_epochs": 1, "max_new_tokens": 8},
    "kto": {"max_steps": 2, "batch_size": 8, "eval_batch_size": 32},
}  # fmt: skip
# The stages between SFT and the evaluation, per pipeline.
MIDDLE = {"dpo": ["dpo"], "grpo": ["reward", "grpo"], "online_dpo": ["reward", "online_dpo"]}


# make test runs the same pipeline against S3 and an MLflow server, console checked alike
# (tests/integration/test_pipeline_s3_mlflow.py); this run checks the laptop's default: the
# local MLflow store, the outputs' folders and what the summary names.
@pytest.mark.pipelines  # minutes: make test-pipelines
def test_local_pipeline_runs_end_to_end_and_tracks_every_stage(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(TINY))
    assert main(["run", "--config", str(config), "--output-root", str(tmp_path / "outputs")]) == 0
    out = capsys.readouterr().out
    (run_dir,) = (tmp_path / "outputs").iterdir()

    assert_run_console(out, ("prepare", "sft", "reward", "ppo", "evaluate"), 7, 2)
    assert "sft rows 108" in out
    assert f"policy:       {run_dir / 'ppo' / 'model'}" in out
    assert f"report:       {run_dir / 'evaluate' / 'report'} (HTML)" in out
    parent_id = re.search(r"parent run (\w+) \(experiment 'rlhf'\)", out).group(1)

    tasks = {p.name for p in run_dir.iterdir() if p.is_dir()}
    assert {"prepare", "sft", "reward", "ppo"} <= tasks
    assert (run_dir / "evaluate" / "report").read_text().startswith("<!DOCTYPE")
    for model in ("sft/model", "reward/model", "ppo/model"):
        folder = run_dir / model
        assert (folder / "manifest.json").exists()
        assert (folder / "model.safetensors").exists()
    rm_manifest = json.loads((run_dir / "reward/model/manifest.json").read_text())
    assert "gold_accuracy" in rm_manifest["metrics"]  # "auto" picked the demo's gold reward

    client = MlflowClient(tracking.tracking_uri())
    parent = client.get_run(parent_id)
    assert re.search(rf"run {parent.data.tags[tracking.PIPELINE_RUN_TAG]}: finished in ", out)
    assert parent.info.status == "FINISHED"
    exp = parent.info.experiment_id
    children = client.search_runs(
        [exp], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    stages = {r.data.tags["rlhf.stage"]: r for r in children}
    assert set(stages) == {"prepare", "sft", "reward", "ppo", "evaluate"}
    assert all(r.info.status == "FINISHED" for r in children)
    sft_run = stages["sft"]
    assert "val/loss" in sft_run.data.metrics and "train/loss" in sft_run.data.metrics
    assert sft_run.data.params["sft.base_model"] == "preset:micro-llama"
    history = client.get_metric_history(sft_run.info.run_id, "train/loss")
    assert len(history) >= 2  # per-step metrics, not just a final value
    assert client.list_artifacts(sft_run.info.run_id, "model")


@pytest.mark.pipelines  # minutes: make test-pipelines
@pytest.mark.parametrize("pipeline", sorted(MIDDLE))
def test_dpo_grpo_and_online_dpo_pipelines_run_end_to_end(pipeline, tmp_path, capsys):
    """prepare -> SFT -> [reward model ->] DPO / GRPO / online DPO -> evaluate, untracked to
    stay cheap; the
    DPO pipeline has no reward model, and its evaluation still reports gold win rate and KL.
    The DPO run is verbose: KFP's executor input JSON and banners are back."""
    config = {**TINY_ALL, "pipeline": {"track": False}}
    verbose = pipeline == "dpo"
    result = run_local(config, tmp_path / "outputs", pipeline=pipeline, verbose=verbose)
    out = capsys.readouterr().out
    for noise in ('"parameterValues": {', "Got executor_input:", "Executing task 'dpo'"):
        assert (noise in out.replace("\x1b[96m", "").replace("\x1b[0m", "")) == verbose, noise
    assert [r.stage for r in result.stages] == ["prepare", "sft", *MIDDLE[pipeline], "evaluate"]
    tasks = {p.name for p in result.run_dir.iterdir() if p.is_dir()}
    train_task = pipeline.replace("_", "-")  # KFP's task name
    assert {"prepare", "sft", train_task, "evaluate"} <= tasks
    assert ("reward" in tasks) == (pipeline != "dpo")
    manifest = json.loads((result.run_dir / train_task / "model" / "manifest.json").read_text())
    assert manifest["artifact"] == f"{pipeline}_policy"
    report = (result.run_dir / "evaluate" / "report").read_text()
    metrics = json.loads((result.run_dir / "evaluate" / "executor_output.json").read_text())
    assert "win_rate_gold" in json.dumps(metrics) and "kl_candidate_reference" in json.dumps(
        metrics
    )
    if pipeline == "dpo":
        assert "No reward model was given" in report
        assert "win_rate_rm" not in json.dumps(metrics)
    else:
        assert "win_rate_rm" in json.dumps(metrics)


@pytest.mark.pipelines  # minutes: make test-pipelines
def test_collect_pipeline_samples_a_batch_the_app_and_judge_read(tmp_path, capsys):
    """prepare -> SFT -> candidates: the batch folder holds K distinct answers per prompt."""
    from rlhf.labelling.batch import read_tasks

    config = {**TINY, "candidates": {"k": 3, "max_new_tokens": 8, "max_prompts": 4},
              "pipeline": {"track": False}}  # fmt: skip
    result = run_local(config, tmp_path / "outputs", pipeline="collect")
    assert [r.stage for r in result.stages] == ["prepare", "sft", "candidates"]
    tasks = list(read_tasks(str(result.run_dir / "candidates" / "batch")))
    assert len(tasks) == 4
    for t in tasks:
        assert len({c.text for c in t.candidates}) == len(t.candidates) == 3
        assert {c.source for c in t.candidates} == {"model"}  # the SFT task's output folder


@pytest.mark.pipelines  # minutes: make test-pipelines
def test_kto_pipeline_runs_end_to_end_on_the_demo_pairs_split_in_two(tmp_path, capsys):
    """prepare (the demo's pairs also split into unpaired feedback) -> SFT -> KTO ->
    evaluate, with no reward model."""
    config = {**TINY_ALL, "pipeline": {"track": False}}
    result = run_local(config, tmp_path / "outputs", pipeline="kto")
    assert [r.stage for r in result.stages] == ["prepare", "sft", "kto", "evaluate"]
    run_dir = result.run_dir
    unpaired = json.loads((run_dir / "prepare" / "unpaired" / "manifest.json").read_text())
    assert unpaired["derived_from"] == "preferences"
    assert unpaired["from_preferences"] == 2 * sum(
        json.loads((run_dir / "prepare" / "preferences" / "manifest.json").read_text())[
            "rows"
        ].values()
    )
    manifest = json.loads((run_dir / "kto" / "model" / "manifest.json").read_text())
    assert manifest["artifact"] == "kto_policy" and manifest["metrics"]["steps"] == 2
    metrics = json.dumps(json.loads((run_dir / "evaluate" / "executor_output.json").read_text()))
    assert "win_rate_gold" in metrics and "win_rate_rm" not in metrics


def test_a_pipelines_own_default_overrides_stay_under_the_sections_keys():
    # The kto pipeline's prepare splits the pairs unless the prepare section says otherwise.
    assert pipeline_arguments(TINY_ALL, "kto")["prepare_overrides"] == {
        "unpaired_from_preferences": True
    }
    off = {**TINY_ALL, "prepare": {"unpaired_from_preferences": False, "seed": 3}}
    assert pipeline_arguments(off, "kto")["prepare_overrides"] == {
        "unpaired_from_preferences": False,
        "seed": 3,
    }
    assert pipeline_arguments(TINY_ALL, "dpo")["prepare_overrides"] == {}


@pytest.mark.pipelines  # minutes: make test-pipelines
def test_collect_pipeline_samples_from_a_given_model_without_sft(micro_sft, tmp_path, monkeypatch):
    """pipeline.model set: prepare -> the model imported (dsl.importer) -> candidates; no SFT
    task runs. A relative folder is taken from the working directory."""
    from rlhf.labelling.batch import read_tasks

    shutil.copytree(micro_sft, tmp_path / "given-policy")
    monkeypatch.chdir(tmp_path)
    config = {**TINY, "candidates": {"k": 3, "max_new_tokens": 8, "max_prompts": 4},
              "pipeline": {"track": False, "model": "given-policy"}}  # fmt: skip
    result = run_local(config, tmp_path / "outputs", pipeline="collect")
    assert [r.stage for r in result.stages] == ["prepare", "candidates"]
    assert not (result.run_dir / "sft").exists()
    tasks = list(read_tasks(str(result.run_dir / "candidates-2" / "batch")))
    assert len(tasks) == 4
    for t in tasks:
        assert len({c.text for c in t.candidates}) == len(t.candidates) == 3
        assert {c.source for c in t.candidates} == {"given-policy"}
    with pytest.raises(ValueError, match="'nowhere' is not a model folder"):
        run_local({**config, "pipeline": {"model": "nowhere"}}, tmp_path / "o2", "collect")


def test_run_config_maps_named_parameters_and_overrides():
    args = pipeline_arguments(
        {
            "data": {"sft": ["a.jsonl", "s3://b/c,d.jsonl"]},
            "sft": {"epochs": 2, "warmup_ratio": 0.1},
            "pipeline": {"gold_reward": ""},
        },
        "ppo",
    )
    assert args["sft_data"] == ["a.jsonl", "s3://b/c,d.jsonl"]  # a list: a comma is no separator
    assert args["sft_epochs"] == 2
    assert args["sft_overrides"] == {"warmup_ratio": 0.1}
    assert args["gold_reward"] == ""
    with pytest.raises(ValueError, match="pipeline.gold_reward"):
        pipeline_arguments({"ppo": {"gold_reward": "x:y"}}, "ppo")
    with pytest.raises(ValueError, match="unknown field"):
        pipeline_arguments({"ppo": {"kl_coeff": 0.1}}, "ppo")
    # Each pipeline takes the sections of its own stages; the others are checked, not passed.
    dpo = pipeline_arguments(TINY_ALL, "dpo")
    assert dpo["dpo_overrides"] == {"max_steps": 2, "batch_size": 8, "eval_batch_size": 32}
    assert "ppo_overrides" not in dpo and "reward_overrides" not in dpo
    grpo = pipeline_arguments(TINY_ALL, "grpo")
    assert grpo["grpo_iterations"] == 2 and grpo["grpo_group_size"] == 4
    assert "ppo_overrides" not in grpo and "reward_overrides" in grpo
    with pytest.raises(ValueError, match="unknown field"):
        pipeline_arguments({"grpo": {"group": 4}}, "dpo")
    online = pipeline_arguments(TINY_ALL, "online_dpo")
    assert online["online_dpo_iterations"] == 2 and online["online_dpo_samples_per_prompt"] == 4
    assert online["online_dpo_overrides"]["dpo_epochs"] == 1 and "grpo_overrides" not in online


def test_run_config_mistakes_are_clear_errors():
    from rlhf.pipeline.pipelines import get_pipeline
    from rlhf.pipeline.run_config import _typed_parameters

    with pytest.raises(ValueError, match="unknown pipeline 'nope'"):
        get_pipeline("nope")
    fn = get_pipeline("ppo")
    with pytest.raises(ValueError, match="unknown pipeline parameter 'sft_lrr'"):
        _typed_parameters(fn, {"sft_lrr": 1.0})
    typed = _typed_parameters(fn, {"sft_lr": "1e-5", "sft_epochs": 2.0, "gold_reward": None})
    assert typed == {"sft_lr": 1e-5, "sft_epochs": 2, "gold_reward": ""}
    with pytest.raises(ValueError, match="stage's own section"):
        pipeline_arguments({"pipeline": {"sft_overrides": {"lr": 1}}}, "ppo")
