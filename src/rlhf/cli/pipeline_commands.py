"""The pipeline commands: ``rlhf run`` (locally with kfp.local), ``compile``, ``publish``,
``submit`` and ``schedule`` (on Kubeflow Pipelines)."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from typing import Any

import yaml

from rlhf.cli.arguments import (
    CRON_HELP,
    KFP_EPILOG,
    add_cluster_config_flag,
    add_kfp_flags,
    add_pipeline_flag,
    add_submission_flags,
    add_verbose_flag,
)
from rlhf.stages.specs import STAGES


def run_config(args: argparse.Namespace) -> dict[str, Any]:
    """The run config of ``rlhf run``/``submit``/``schedule``: the YAML file, then ``--set
    section.field=value`` overrides."""
    from rlhf.config import parse_overrides

    config: dict[str, Any] = {}
    if args.config:
        config = yaml.safe_load(Path(args.config).read_text(encoding="utf-8")) or {}
    if not isinstance(config, dict):
        raise ValueError(f"{args.config}: expected a mapping of sections")
    for key, value in parse_overrides(args.set).items():
        section, _, field = key.partition(".")
        if not field:
            raise ValueError(
                f"--set for rlhf {args.command} takes section.field=value, got {key!r}"
            )
        config[section] = config.get(section) or {}  # an empty section reads as None
        config[section][field] = yaml.safe_load(value)
    return config


def cmd_run(args: argparse.Namespace) -> int:
    from rlhf import tracking
    from rlhf.console.progress import format_duration
    from rlhf.console.stage_report import summary_table
    from rlhf.pipeline.local_run import run_local

    config = run_config(args)
    if args.no_track:
        config.setdefault("pipeline", {})["track"] = False
    result = run_local(config, args.output_root, args.pipeline, verbose=args.verbose)
    run_dir = result.run_dir
    print()
    print(
        f"pipeline {args.pipeline}, run {result.pipeline_run}: "
        f"finished in {format_duration(result.seconds)}"
    )
    print()
    print(summary_table(result.stages))
    print()
    for spec in STAGES.values():  # each task's folder is named as its task
        if (run_dir / spec.task_name / "model").is_dir():
            print(f"{spec.output_label + ':':<14}{run_dir / spec.task_name / 'model'}")
    # collect: the batch of the branch that ran (candidates from SFT, candidates-2 from a
    # given model)
    for batch in sorted(run_dir.glob("candidates*/batch")):
        print(f"{'batch:':<14}{batch}")
    if (run_dir / "evaluate" / "report").is_file():
        print(f"{'report:':<14}{run_dir / 'evaluate' / 'report'} (HTML)")
    print(f"{'all outputs:':<14}{run_dir}")
    publish_to = (config.get("pipeline") or {}).get("publish_to")
    if publish_to:
        print(f"{'published:':<14}{publish_to.rstrip('/')}/{result.pipeline_run}/")
    if result.mlflow_parent_run_id:
        print(f"{'MLflow:':<14}{tracking.describe_location()}")
        print(
            f"{'':<14}parent run {result.mlflow_parent_run_id} "
            f"(experiment '{result.experiment}'), one nested run per stage"
        )
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from rlhf import storage

    print(storage.publish(args.source, args.destination))
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    from rlhf.pipeline.cluster import load_cluster_config
    from rlhf.pipeline.compile import compile_all

    config = load_cluster_config(args.cluster_config)
    components = None if args.no_components else args.components_out
    for path in compile_all(args.out, config, components):
        print(path)
    return 0


def _kfp(args: argparse.Namespace) -> Any:
    from rlhf.pipeline.submit import Connection, connect

    return connect(Connection(args.host, args.existing_token, not args.insecure))


def _upload(args: argparse.Namespace) -> tuple[Any, Any]:
    """Check the run config and cluster config, then connect, upload (or reuse) the pipeline
    version and find the experiment: (client, Prepared)."""
    from rlhf.pipeline.cluster import load_cluster_config
    from rlhf.pipeline.run_config import pipeline_parameters
    from rlhf.pipeline.submit import prepare

    config, cluster_config = run_config(args), load_cluster_config(args.cluster_config)
    pipeline_parameters(config, args.pipeline)  # a mistake stops here, before any request
    client = _kfp(args)
    prepared = prepare(
        client, args.pipeline, config, cluster_config, args.experiment, args.namespace,
        args.package,
    )  # fmt: skip
    up = prepared.uploaded
    print(
        f"pipeline {args.pipeline}: version {up.version_name} "
        f"({'reused' if up.reused else 'uploaded'}; pipeline id {up.pipeline_id}, "
        f"version id {up.version_id})"
    )
    return client, prepared


def cmd_submit(args: argparse.Namespace) -> int:
    import time

    from rlhf.pipeline import submit

    client, prepared = _upload(args)
    name = args.run_name or f"{args.pipeline}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_id = submit.create_run(client, prepared, name, args.service_account)
    print(f"run: {run_id} ({name}) in experiment '{args.experiment}'")
    if not args.wait:
        return 0
    state = submit.wait(client, run_id, args.timeout, args.poll)
    print(f"run {run_id}: {state}")
    return 0 if state == "SUCCEEDED" else 1


def cmd_schedule_create(args: argparse.Namespace) -> int:
    from rlhf.pipeline import schedule

    if args.cron is not None:
        schedule.validate_cron(args.cron)  # before uploading anything
    interval = schedule.parse_interval(args.interval) if args.interval else None
    client, prepared = _upload(args)
    name = args.name or f"{args.pipeline}-retraining"
    rid = schedule.create_schedule(
        client, prepared, name, cron=args.cron, interval_second=interval,
        max_concurrency=args.max_concurrency, no_catchup=not args.catchup,
        start_time=args.start_time, end_time=args.end_time,
        service_account=args.service_account,
    )  # fmt: skip
    trigger = f"cron '{schedule.validate_cron(args.cron)}'" if args.cron else f"every {interval} s"
    print(f"schedule: {rid} ({name}), {trigger}, in experiment '{args.experiment}'")
    if args.replace:
        for old in schedule.delete_others(client, name, keep=rid, namespace=args.namespace):
            print(
                f"deleted the earlier schedule {old.recurring_run_id} ({old.name}, {old.trigger})"
            )
    return 0


def cmd_schedule_list(args: argparse.Namespace) -> int:
    from rlhf.pipeline import schedule

    rows = schedule.list_schedules(_kfp(args), namespace=args.namespace)
    if not rows:
        print("no schedules")
    for s in rows:
        catchup = "no catch-up" if s.no_catchup else "catch-up"
        print(
            f"{s.recurring_run_id}  {s.name}  {s.status}  {s.trigger}  "
            f"max concurrency {s.max_concurrency}  {catchup}"
        )
    return 0


def cmd_schedule_disable(args: argparse.Namespace) -> int:
    from rlhf.pipeline import schedule

    client = _kfp(args)
    found = schedule.find_schedule(client, args.schedule, args.namespace)
    schedule.disable_schedule(client, found.recurring_run_id)
    print(f"disabled schedule {found.recurring_run_id} ({found.name})")
    return 0


def add_pipeline_commands(sub: Any) -> None:
    """The subcommands run, publish, compile, submit and schedule."""
    p = sub.add_parser("run", help="run the whole pipeline locally with kfp.local")
    p.add_argument(
        "--config",
        help="YAML with sections data, pipeline, prepare, demo, sft, reward, ppo, dpo, grpo, eval",
    )
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE")
    add_pipeline_flag(p, "run")
    p.add_argument("--output-root", default="local_outputs", help="where task outputs go")
    p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    add_verbose_flag(p)
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser(
        "publish", help="upload a file or folder to s3:// (objects first, manifest.json last)"
    )
    p.add_argument("source", help="local file or folder (a base model, tokenizer, data set)")
    p.add_argument("destination", help="s3://bucket/prefix (or a local folder)")
    p.set_defaults(fn=cmd_publish)

    p = sub.add_parser(
        "compile",
        help="compile the pipelines into KFP YAML, k8s manifests and component specs",
        description="Write <out>/<pipeline>.yaml (the package to upload in the KFP UI), "
        "<out>/k8s/<pipeline>.yaml (Pipeline and PipelineVersion resources for kubectl apply), "
        "<out>/k8s/submit-run.yaml (a Job submitting a run from inside the cluster, for "
        "kubectl create), one component spec per stage, and for stages on several nodes "
        "<out>/k8s/trainjobs/<pipeline>-<stage>.yaml (the TrainJob each such task creates) and "
        "<out>/k8s/trainjob-rbac.yaml. Images, resources, GPUs, nodes, secrets, retries and "
        "caching come from --cluster-config (see docs/configuration.md).",
    )
    p.add_argument("--out", default="pipelines", help="folder for packages (default: pipelines)")
    p.add_argument(
        "--components-out",
        default="components",
        help="folder for component specs (default: components)",
    )
    p.add_argument("--no-components", action="store_true", help="do not write component specs")
    add_cluster_config_flag(p)
    p.set_defaults(fn=cmd_compile)

    p = sub.add_parser(
        "submit",
        help="run a pipeline on a Kubeflow Pipelines cluster",
        description=textwrap.fill(
            "Compile the pipeline with the cluster config, upload it to KFP (reusing the "
            "pipeline, and the version when the same package was uploaded before), and create "
            "a run in an experiment with the parameters of a run config (the file of `rlhf "
            "run`). Credentials are never parameters: the pods read them from Kubernetes "
            "Secrets (docs/kubeflow.md).",
            78,
        ),
        epilog=KFP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_submission_flags(p)
    p.add_argument("--run-name", help="display name of the run (default: <pipeline>-<time>)")
    p.add_argument(
        "--wait", action="store_true", help="wait for the run to end; exit 1 unless it succeeded"
    )
    p.add_argument(
        "--timeout", type=float, default=48 * 3600, help="seconds --wait waits (default: 172800)"
    )
    p.add_argument(
        "--poll", type=float, default=30.0, help="seconds between state checks (default: 30)"
    )
    p.set_defaults(fn=cmd_submit)

    p = sub.add_parser(
        "schedule",
        help="scheduled retraining: create, list and disable recurring runs on KFP",
        description="Recurring runs of a pipeline on Kubeflow Pipelines. Each run retrains from "
        "the latest data and its champion gate promotes the new model only if it beats the "
        "current champion.",
    )
    actions = p.add_subparsers(dest="action", required=True)
    q = actions.add_parser(
        "create",
        help="upload the pipeline and create a recurring run",
        description=textwrap.fill(
            "Upload (or reuse) the pipeline version like `rlhf submit`, then create an enabled "
            "recurring run with a cron expression or an interval. Each run's champion gate "
            "promotes the new model only if it beats the current champion.",
            78,
        )
        + "\n\n"
        + CRON_HELP,
        epilog=KFP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_submission_flags(q)
    when = q.add_mutually_exclusive_group(required=True)
    when.add_argument(
        "--cron",
        help="6 fields, seconds first: '0 0 3 * * *' is daily at 03:00 (a 5-field crontab "
        "expression is rejected with its 6-field form); @daily, @weekly, ... are accepted",
    )
    when.add_argument("--interval", help="time between runs: seconds, or '90m', '12h', '7d'")
    q.add_argument(
        "--name", help="display name of the recurring run (default: <pipeline>-retraining)"
    )
    q.add_argument(
        "--max-concurrency", type=int, default=1,
        help="runs of this schedule allowed at once (default: 1: a slow run delays the next)",
    )  # fmt: skip
    q.add_argument(
        "--catchup", action="store_true",
        help="after a pause, start the runs missed meanwhile (default: no catch-up, only the next)",
    )  # fmt: skip
    q.add_argument("--start-time", help="RFC 3339 time of the first possible run (default: now)")
    q.add_argument("--end-time", help="RFC 3339 time after which no run starts (default: never)")
    q.add_argument(
        "--replace", action="store_true",
        help="then delete the other recurring runs with this name (a schedule is pinned to the "
        "pipeline version it was created with: this moves it to the new one; the Helm chart's "
        "hook uses it)",
    )  # fmt: skip
    q.set_defaults(fn=cmd_schedule_create)
    q = actions.add_parser("list", help="list the recurring runs", epilog=KFP_EPILOG)
    add_kfp_flags(q)
    q.set_defaults(fn=cmd_schedule_list)
    q = actions.add_parser(
        "disable", help="disable a recurring run (it stays listed; no new runs start)",
        epilog=KFP_EPILOG,
    )  # fmt: skip
    q.add_argument("schedule", help="the recurring run's id or its (unique) name")
    add_kfp_flags(q)
    q.set_defaults(fn=cmd_schedule_disable)
