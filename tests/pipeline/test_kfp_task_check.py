"""The cheaper kfp task check (rlhf/pipeline/kfp_task_check.py) refuses what kfp's refuses,
with kfp's message, and is what building a pipeline uses."""

import inspect

import pytest
from kfp import dsl
from kfp.dsl import pipeline_task

from rlhf.pipeline import kfp_task_check
from rlhf.pipeline.pipelines import PIPELINES  # noqa: F401  (builds every pipeline: installs it)


def test_building_the_pipelines_installs_the_cheap_check():
    assert pipeline_task.PipelineTask._ensure_container_spec_exists is (
        kfp_task_check._ensure_container_spec_exists
    )


def test_a_task_without_a_container_is_refused_naming_the_setting(monkeypatch):
    stack_calls = []
    monkeypatch.setattr(inspect, "stack", lambda *a, **k: stack_calls.append(1) or [])
    kfp_task_check.install()

    def pipeline(uri: str = "gs://bucket/model"):
        imported = dsl.importer(artifact_uri=uri, artifact_class=dsl.Model)
        imported.set_cpu_request("1")

    with pytest.raises(ValueError) as error:
        dsl.pipeline(pipeline)  # building it runs it
    assert str(error.value) == (
        "set_cpu_request can only be used on single-step components, not pipelines used as "
        "components, or special components like importers."
    )
    assert stack_calls == []  # the whole stack was never walked
