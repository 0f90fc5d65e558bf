"""The stage specs are the one declaration of each stage: the KFP components and pipelines
must match them, and a config field added in one place must reach every entry point."""

import dataclasses
import inspect
import sys
import types
import typing

import pytest
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from rlhf.cli import main
from rlhf.pipeline import component_runner
from rlhf.pipeline.cluster import default_stages
from rlhf.pipeline.component_runner import CONTEXT
from rlhf.pipeline.components import COMPONENTS
from rlhf.pipeline.pipelines import PIPELINES
from rlhf.pipeline.run_config import pipeline_parameters
from rlhf.stages import specs
from rlhf.stages.specs import STAGES, pipeline_parameter, ports, uris_parameter

ARTIFACT_TYPES = {"dataset": Dataset, "model": Model, "html": HTML, "file": Artifact}


def _expected_component_signature(spec: specs.StageSpec) -> dict[str, object]:
    """What the component of ``spec`` must take, by name: worked out from the spec alone."""
    hints = typing.get_type_hints(spec.config)
    expected: dict[str, object] = {f: hints[f] for f in spec.parameters}
    if spec.uses_gold_reward:
        expected |= {"gold_reward": str, "data_source": str}
    expected |= {"overrides": dict, "pipeline_run": str, "mlflow_experiment": str, "track": bool}
    expected |= {"metrics": Output[Metrics], "publish_to": str}
    for port in ports(spec.inputs):
        if not port.in_pipeline:
            continue
        if port.kind == "uris":
            expected[uris_parameter(port.name)] = list
        else:
            kind = Input[ARTIFACT_TYPES[port.kind]]
            expected[port.name] = kind if port.required else kind | None
    for port in ports(spec.outputs):
        if port.in_pipeline:
            expected[port.name] = Output[ARTIFACT_TYPES[port.kind]]
    if spec.name == "prepare":
        expected["demo_overrides"] = dict
    return expected


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_component_signature_matches_the_spec(stage):
    spec = STAGES[stage]
    component = COMPONENTS[stage]
    signature = inspect.signature(component.python_func)
    actual = {name: p.annotation for name, p in signature.parameters.items()}
    # str | None and str are the same for a parameter with a default of None.
    expected = {
        name: (str if tp == (str | None) else tp)
        for name, tp in _expected_component_signature(spec).items()
    }
    assert actual == expected
    # What later tasks read: prepare's data source, or whether the spec's metric is 1.
    returns = str if stage == "prepare" else bool if spec.returns_metric else inspect._empty
    assert signature.return_annotation is returns
    for name, p in signature.parameters.items():
        optional = {q.name for q in ports(spec.inputs) if not q.required and q.kind != "uris"}
        port_optional = name in optional
        assert (p.default is None) == port_optional or name == "publish_to", name


def test_every_stage_has_a_component_and_cluster_settings():
    assert set(COMPONENTS) == set(STAGES) == set(default_stages())
    for name, component in COMPONENTS.items():
        # The task and its folder carry the stage's name, underscores as dashes.
        assert component.name == STAGES[name].task_name


@pytest.mark.parametrize("pipeline", sorted(PIPELINES))
def test_pipeline_signature_matches_the_specs(pipeline):
    """Each stage of the pipeline has its named parameters, with the config's defaults, and its
    overrides; the pipeline takes nothing else beyond the data, demo and run context."""
    params = inspect.signature(PIPELINES[pipeline].pipeline_func).parameters
    stages = [s.removesuffix("_overrides") for s in params if s.endswith("_overrides")]
    stages.remove("demo")
    expected = {"demo_overrides", *CONTEXT}
    if any(STAGES[s].uses_gold_reward for s in stages):  # the collect pipeline has none
        expected.add("gold_reward")
    if pipeline == "collect":  # a given model to sample from instead of training SFT
        expected.add("model")
    for stage in stages:
        spec = STAGES[stage]
        expected.add(f"{stage}_overrides")
        if spec.optional:  # an optional step: off unless its switch is on
            expected.add(f"{stage}_enabled")
            assert params[f"{stage}_enabled"].default is False
        uris = [p for p in ports(spec.inputs) if p.kind == "uris" and p.in_pipeline]
        expected |= {uris_parameter(p.name) for p in uris}
        for field in dataclasses.fields(spec.config):
            if field.name not in spec.parameters or field.name == "gold_reward":
                continue
            name = pipeline_parameter(stage, field.name)
            expected.add(name)
            assert params[name].default == field.default, (stage, field.name)
    assert set(params) == expected


@pytest.fixture
def probe_stage(monkeypatch):
    """The SFT stage with one config field added (``probe``), as a contributor would add it: one
    line in the dataclass. Its entry point records the config it is run with."""
    seen = []
    config = dataclasses.make_dataclass(
        "SFTConfig", [("probe", int, dataclasses.field(default=0))], bases=(specs.SFTConfig,)
    )
    module = types.ModuleType("probe_stage")
    module.run = lambda config, inputs, outputs, tracker=None: seen.append(config) or {"x": 1.0}
    monkeypatch.setitem(sys.modules, "probe_stage", module)
    spec = dataclasses.replace(STAGES["sft"], config=config, entry="probe_stage:run")
    monkeypatch.setitem(STAGES, "sft", spec)
    return seen


def test_a_new_config_field_reaches_every_entry_point(probe_stage, tmp_path):
    # 1. The stage command: rlhf sft --set probe=...
    code = main(["sft", "--no-track", "--data", "d", "--out", str(tmp_path / "m"),
                 "--set", "probe=3"])  # fmt: skip
    assert code == 0 and probe_stage[-1].probe == 3

    # 2. rlhf run --set sft.probe=...: the run config maps it into the pipeline's sft_overrides
    # (the same mapping rlhf submit and rlhf schedule send to KFP) ...
    params = pipeline_parameters({"sft": {"probe": 5}}, "ppo")
    assert params["sft_overrides"] == {"probe": 5}

    # 3. ... and the KFP component builds the stage's config from those overrides.
    class Path:
        def __init__(self, path):
            self.path = path

    class Metrics:
        logged = {}

        def log_metric(self, key, value):
            self.logged[key] = value

    arguments = dict(base_model="preset:tiny-llama", seed=0, max_length=64, epochs=1, lr=1e-3,
                     batch_size=4, overrides=params["sft_overrides"], pipeline_run="r",
                     mlflow_experiment="e", track=False, data=Path("d"),
                     model=Path(str(tmp_path / "k")), metrics=Metrics(), publish_to="")  # fmt: skip
    component_runner.run_component("sft", arguments)
    assert probe_stage[-1].probe == 5 and probe_stage[-1].epochs == 1
    assert Metrics.logged == {"x": 1.0}


def test_a_component_argument_the_spec_does_not_declare_is_an_error(probe_stage):
    with pytest.raises(TypeError, match="does not declare: \\['surprise'\\]"):
        component_runner.run_component(
            "sft",
            dict(base_model="b", seed=0, max_length=8, epochs=1, lr=1.0, batch_size=1,
                 overrides={}, pipeline_run="r", mlflow_experiment="e", track=False,
                 data=None, model=None, metrics=None, publish_to="", surprise=1),
        )  # fmt: skip


def test_cli_doc_lists_every_named_parameter():
    """docs/cli.md's table of config entries and pipeline parameters matches the specs."""
    from pathlib import Path

    text = (Path(__file__).parents[2] / "docs" / "cli.md").read_text(encoding="utf-8")
    for name, spec in STAGES.items():
        fields = [f for f in spec.parameters if f not in specs.SHARED_PARAMETERS]
        if fields:
            entries = ", ".join(f"`{name}.{f}`" for f in fields)
            params = ", ".join(f"`{pipeline_parameter(name, f)}`" for f in fields)
            assert f"| {entries} | {params} |" in text, name
