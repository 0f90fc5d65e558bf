"""The model registry and the champion gate against a real MLflow server (artifacts proxied
to the S3 server): the first policy becomes champion; a deliberately worse one, evaluated
next, is registered as challenger and does not take the alias."""

from __future__ import annotations

import re
import uuid
from typing import Any

from mlflow.tracking import MlflowClient

from rlhf import storage, tracking
from rlhf.config import EvalConfig
from rlhf.modeling import models
from rlhf.stages import evaluate

# The gate's judge here: the share of the response's words found in the prompt. The tiny
# trained policy copies ingredient words from the recipe (it is too small to score on the demo's
# gold reward, which gives -1 to anything short of a list); random weights produce noise.
JUDGE = f"{__name__}:copied_words"


def copied_words(prompt: Any, response: str) -> float:
    text = prompt if isinstance(prompt, str) else " ".join(m["content"] for m in prompt)
    vocabulary = set(re.findall(r"[a-z]+", text.lower()))
    words = re.findall(r"[a-z]+", response.lower())
    return sum(w in vocabulary for w in words) / len(words) if words else 0.0


def untrained_copy(trained: str, out) -> str:
    """The trained policy's architecture and tokenizer with freshly initialised weights: a
    deliberately worse candidate (its samples are random tokens)."""
    tokenizer = models.load_tokenizer(trained)
    model = models.load_causal_lm(trained)
    fresh = type(model)(model.config)
    with storage.atomic_dir(out) as tmp:
        models.save_pretrained(fresh, tokenizer, tmp)
        storage.write_manifest(tmp, {"artifact": "untrained_policy"})
    return str(out)


def evaluate_and_gate(config, prepared, micro_models, candidate, out) -> tuple[dict, str]:
    inputs = evaluate.EvalInputs(
        prepared["eval_prompts"], candidate, micro_models["sft"], micro_models["reward"]
    )
    outputs = evaluate.EvalOutputs(str(out / "report.html"), str(out / "metrics.json"))
    with tracking.stage_run("evaluate", pipeline_run=f"gate-{out.name}") as tracker:
        metrics = evaluate.run(config, inputs, outputs, tracker)
    return metrics, tracker.run_id


def test_champion_gate_over_two_runs(tracking_server, prepared, micro_models, tmp_path):
    name = f"policy-{uuid.uuid4().hex[:8]}"
    config = EvalConfig(
        max_prompts=8, samples_per_prompt=2, max_new_tokens=12,
        gold_reward=JUDGE,
        registered_policy=name, registered_reward_model=f"{name}-rm", gate_min_samples=16,
    )  # fmt: skip
    client = MlflowClient(tracking_server)

    # Run 1: no champion yet, so the trained policy becomes champion.
    first, run1 = evaluate_and_gate(
        config, prepared, micro_models, micro_models["sft"], tmp_path / "r1"
    )
    assert first["gate/promoted"] == 1.0 and "gate/win_rate" not in first
    assert client.get_model_version_by_alias(name, "champion").version == "1"
    assert client.get_model_version_by_alias(f"{name}-rm", "champion").version == "1"

    # Run 2: a worse candidate (untrained weights) against the champion.
    worse = untrained_copy(micro_models["sft"], tmp_path / "untrained")
    second, run2 = evaluate_and_gate(config, prepared, micro_models, worse, tmp_path / "r2")
    assert second["gate/promoted"] == 0.0
    assert second["gate/samples"] == 16.0
    # Its samples are noise, the champion's are not: it loses most pairs.
    assert second["gate/win_rate"] < 0.5
    assert second["champion/gold_mean"] > second["candidate/gold_mean"]
    champion = client.get_model_version_by_alias(name, "champion")
    challenger = client.get_model_version_by_alias(name, "challenger")
    assert (champion.version, challenger.version) == ("1", "2")
    assert client.get_model_version_by_alias(f"{name}-rm", "challenger").version == "2"

    # The decision and its numbers: on the version, on the evaluation run, in the metrics.
    tags = challenger.tags
    assert tags["rlhf.gate.alias"] == "challenger"
    assert "over the champion <=" in tags["rlhf.gate.reason"]
    assert float(tags["rlhf.gate.win_rate"]) == second["gate/win_rate"]
    assert tags["rlhf.pipeline_run"] == "gate-r2" and tags["rlhf.evaluation_run"] == run2
    assert tags["rlhf.data_sha256.eval_prompts"]
    assert tags["rlhf.data_sha256.reference"]  # the SFT model's data, from its manifest
    assert second["gate/win_rate"] == second["win_rate_gold"]  # candidate vs SFT = champion
    assert float(tags["eval.win_rate_gold"]) == float(f"{second['win_rate_gold']:.6g}")
    run = client.get_run(run2)
    assert run.data.metrics["gate/promoted"] == 0.0
    assert run.data.tags["rlhf.registered.policy"] == f"{name}/2"
    # Neither candidate was logged by a training run here, so the versions point at copies
    # logged into the evaluation runs (on S3, through the server).
    assert champion.source == f"{client.get_run(run1).info.artifact_uri}/registered/policy"
    fetched = tracking_registry().fetch(tracking_version(name, "1", champion.source))
    assert storage.verify_folder(fetched)["files"]


def tracking_registry():
    from rlhf.registry import ModelRegistry

    return ModelRegistry(MlflowClient(tracking.tracking_uri()), tracking.tracking_uri())


def tracking_version(name: str, version: str, source: str):
    from rlhf.registry import Version

    return Version(name, version, source)
