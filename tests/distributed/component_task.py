"""A KFP component's arguments as the KFP executor hands them over, for calling
``component_runner.run_component`` directly: artifacts with a path, a Metrics output that
records what is logged, and an SFT task on a micro model under ZeRO-3."""

from __future__ import annotations


class Artifact:  # what KFP hands a component for an input or output artifact
    def __init__(self, path: str) -> None:
        self.path = path


class Metrics:
    def __init__(self) -> None:
        self.logged: dict[str, float] = {}

    def log_metric(self, key: str, value: float) -> None:
        self.logged[key] = value


def sft_task(data: str, model: str, metrics: Metrics, pipeline_run: str = "r") -> dict:
    """The sft component's arguments: 3 steps of a micro Llama, ZeRO-3 (on several ranks)."""
    overrides = {"max_steps": 3, "eval_every": 0, "distributed": {"zero_stage": 3}}
    return dict(base_model="preset:micro-llama", seed=0, max_length=64, epochs=1, lr=1e-3,
                batch_size=16, overrides=overrides, pipeline_run=pipeline_run,
                mlflow_experiment="e", track=False, data=Artifact(data), model=Artifact(model),
                metrics=metrics, publish_to="")  # fmt: skip
