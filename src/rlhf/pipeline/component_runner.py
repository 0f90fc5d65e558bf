"""The one body of every KFP component: read the component's arguments as its stage's spec
declares them, build the stage's config and ports, run the stage inside its MLflow run (as
one process per GPU when the pod has several: ``stage_job.py``; as a TrainJob when the stage
has several nodes: ``multi_node.py``) and copy its metrics into KFP ``Metrics``.

The component functions in ``components.py`` are one-line calls into here, because KFP ships a
lightweight component's *source* to the pod: keeping logic here keeps it importable, testable
and versioned with the package in the image.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from rlhf import log_setup
from rlhf.config import DemoConfig, from_dict
from rlhf.pipeline.multi_node import NodeLaunch, run_on_nodes
from rlhf.pipeline.pod_env import CHECKPOINTS_ENV, run_checkpoint_dir
from rlhf.pipeline.stage_job import StageJob, processes_per_pod, run_on_processes
from rlhf.stages.specs import ARTIFACTS, StageSpec, get_stage, ports, uris_parameter
from rlhf.stages.tracked_run import run_tracked

log = logging.getLogger("rlhf.pipeline")

DEMO_GOLD_REWARD = "rlhf.data.demo_task:gold_reward"
# What every component receives besides its stage's parameters and ports.
CONTEXT = ("pipeline_run", "mlflow_experiment", "track", "publish_to")


def publish_destination(publish_to: str, pipeline_run: str, stage: str) -> dict[str, str]:
    """``{"publish_to": "<root>/<pipeline_run>/<folder>"}`` for a stage's config (the deploy
    stage's ``storage_uri``: the published policy it serves), or ``{}`` when the pipeline
    publishes nothing (a stage's own override wins)."""
    if not publish_to:
        return {}
    spec = get_stage(stage)
    return {spec.publish_field: f"{publish_to.rstrip('/')}/{pipeline_run}/{spec.publish_folder}"}


def resolve_gold(gold_reward: str, data_source: str) -> str | None:
    """Resolve "auto": the demo task's gold reward on demo data, none otherwise."""
    if gold_reward == "auto":
        return DEMO_GOLD_REWARD if data_source == "demo" else None
    return gold_reward or None


def _port_values(cls: type, args: dict[str, Any]) -> Any:
    """A stage's ``*Inputs``/``*Outputs`` from the component's arguments: an artifact gives
    its path, a missing optional artifact None, a list of URIs itself."""
    values = {}
    for p in ports(cls):
        if not p.in_pipeline:
            continue
        if p.kind == "uris":
            values[p.name] = list(args.pop(uris_parameter(p.name)))
        else:
            value = args.pop(p.name)
            values[p.name] = None if value is None else value.path
    return cls(**values)


def _demo_inputs(spec: StageSpec, outputs: Any, demo_overrides: dict) -> Any:
    """No data given: generate the demo task beside the outputs and prepare it instead."""
    from rlhf.data.demo_task import write_demo_files

    demo_dir = Path(outputs.sft).parent / "demo_files"
    files = write_demo_files(demo_dir, from_dict(DemoConfig, demo_overrides, "demo_overrides"))
    log.info("no data given: generated the demo task into %s", demo_dir)
    # The demo has no unpaired feedback file (the kto pipeline splits its preference pairs).
    return spec.inputs(**{name: [str(files[name])] if name in files else [] for name in ARTIFACTS})


def run_component(stage: str, arguments: dict[str, Any]) -> str | bool | None:
    """Run ``stage`` from a component's ``arguments`` (its ``locals()``). Every argument must
    be one the spec accounts for, so a component that drifts from its spec fails loudly.

    Returns the prepare stage's data source ("demo" when no data was given and the demo task
    was generated, else "files"; later stages pick the demo's gold reward from it); for a
    stage with ``returns_metric``, whether that metric is 1 (the evaluation: the gate promoted
    the candidate); else None.
    """
    spec = get_stage(stage)
    log_setup.configure()
    args = dict(arguments)
    metrics_artifact = args.pop("metrics")
    pipeline_run, experiment, track, publish_to = (args.pop(name) for name in CONTEXT)
    overrides = args.pop("overrides")
    fields = {name: args.pop(name) for name in spec.parameters}
    if spec.uses_gold_reward:
        fields["gold_reward"] = resolve_gold(fields.get("gold_reward", "auto"),
                                             args.pop("data_source"))  # fmt: skip
    fields.update(publish_destination(publish_to, pipeline_run, stage))
    inputs = _port_values(spec.inputs, args)
    outputs = _port_values(spec.outputs, args)
    source = None
    if stage == "prepare":
        demo_overrides = args.pop("demo_overrides")
        source = "files"
        if not any(getattr(inputs, name) for name in ARTIFACTS):
            inputs, source = _demo_inputs(spec, outputs, demo_overrides), "demo"
    if args:
        raise TypeError(f"component {stage}: arguments its spec does not declare: {sorted(args)}")
    checkpoints = os.environ.get(CHECKPOINTS_ENV)
    if checkpoints and spec.gpu and pipeline_run:  # the cluster config's checkpoint_volume
        fields["checkpoint_dir"] = run_checkpoint_dir(pipeline_run, stage, checkpoints)
    config = from_dict(spec.config, {**fields, **overrides}, f"{stage} overrides")
    tags = {"data_source": source} if source else {}
    launch = NodeLaunch.from_env()
    processes = processes_per_pod()
    if launch or processes > 1:
        job = StageJob.of(stage, config, inputs, outputs, pipeline_run=pipeline_run,
                          experiment=experiment, track=track, tags=tags)  # fmt: skip
        # A TrainJob of several nodes (cluster config: nodes), or one process per GPU of the
        # pod (gpus).
        metrics = run_on_nodes(job, launch) if launch else run_on_processes(job, processes)
    else:
        metrics = run_tracked(spec, config, inputs, outputs, pipeline_run, experiment, track, tags)
    for key, value in metrics.items():
        metrics_artifact.log_metric(key.replace("/", "."), float(value))
    if spec.returns_metric:
        return metrics.get(spec.returns_metric) == 1.0
    return source
