"""The ``rlhf`` command: one subcommand per stage and per pipeline action.

A thin adapter: it parses arguments into a stage config (YAML file + ``--set key=value``) and
calls the stage's ``run``. Bad input data exits with status 2 and a message naming the file,
the row and the field.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from rlhf import __version__, log_setup

log = logging.getLogger("rlhf")


def _config(cls: type, args: argparse.Namespace, section: str) -> Any:
    from rlhf.config import load_config, parse_overrides

    return load_config(cls, args.config, parse_overrides(args.set), section=section)


def _add_config_flags(p: argparse.ArgumentParser, section: str) -> None:
    p.add_argument(
        "--config",
        help=f"YAML file; the stage reads its fields from the top-level '{section}:' section",
    )
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override one config field (repeat)"
    )
    p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    p.add_argument("--experiment", default="rlhf", help="MLflow experiment (default: rlhf)")
    _add_verbose_flag(p)


def _add_verbose_flag(p: argparse.ArgumentParser) -> None:
    # SUPPRESS: without the flag here, the global `rlhf -v` still counts.
    p.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
        help="debug logs, library logs and (rlhf run) KFP's own output: executor input and "
        "output, per-task banners",
    )  # fmt: skip


KFP_EPILOG = """\
connecting to KFP:
  --host, else $KF_PIPELINES_ENDPOINT (e.g. http://localhost:8080 after
  `kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80`); in a pod with neither, the
  in-cluster service and the pod's ServiceAccount token ($KF_PIPELINES_SA_TOKEN_PATH).
  A bearer token: --existing-token, or better $KF_PIPELINES_TOKEN (kept out of `ps`).
  Multi-user KFP: --namespace names your profile namespace.
"""
CRON_HELP = """\
KFP cron expressions have 6 fields, seconds first:
  second minute hour day-of-month month day-of-week
  '0 0 3 * * *'    every day at 03:00:00
  '0 30 2 * * MON' every Monday at 02:30:00
  '0 0 */6 * * *'  every 6 hours
A crontab expression has 5 fields: '0 3 * * *' becomes '0 0 3 * * *'."""


def _add_kfp_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--host", help="KFP API endpoint (default: $KF_PIPELINES_ENDPOINT, or in-cluster)"
    )
    p.add_argument(
        "--existing-token", help="bearer token for the KFP API (prefer $KF_PIPELINES_TOKEN)"
    )
    p.add_argument("--namespace", help="multi-user KFP: your profile namespace")
    p.add_argument(
        "--insecure", action="store_true", help="do not verify the server's TLS certificate"
    )


def _add_cluster_config_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cluster-config",
        help="YAML with per-stage images, resources, GPUs, secrets, retries "
        "(docs/configuration.md; default: the built-in defaults)",
    )


class _PipelineNames:
    """The ``choices`` of ``--pipeline``: the names in ``PIPELINES``, read only when argparse
    checks a given name or prints help. Importing the pipelines imports kfp (about a second),
    which ``rlhf --help`` and the stage commands do without."""

    @staticmethod
    def _names() -> list[str]:
        from rlhf.pipeline.pipelines import PIPELINES

        return sorted(PIPELINES)

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())


def _add_pipeline_flag(p: argparse.ArgumentParser, verb: str) -> None:
    # Default None: main() fills in PIPELINE_NAME (imported only by the commands that use it).
    p.add_argument(
        "--pipeline",
        choices=_PipelineNames(),
        metavar="NAME",
        help=f"which algorithm's pipeline to {verb}: %(choices)s (default: ppo)",
    )


def _add_submission_flags(p: argparse.ArgumentParser) -> None:
    _add_kfp_flags(p)
    _add_pipeline_flag(p, "submit")
    p.add_argument(
        "--config", help="run config: the YAML of `rlhf run` (sections data, pipeline, sft, ...)"
    )
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override one field")
    _add_cluster_config_flag(p)
    p.add_argument("--package", help="upload this compiled package instead of compiling the code")
    p.add_argument("--experiment", default="rlhf", help="KFP experiment (default: rlhf)")
    p.add_argument(
        "--service-account", default="", help="Kubernetes ServiceAccount of the run's pods"
    )


def _print_metrics(metrics: dict[str, float]) -> None:
    print(json.dumps({k: round(v, 6) for k, v in metrics.items()}, indent=2))


def _run_stage(
    args: argparse.Namespace,
    name: str,
    run: Callable[[Any], dict[str, float]],
    label: str,
    output: str | Path,
) -> int:
    """Run a stage (``run(tracker)``) in its own MLflow run unless --no-track, between its
    start and summary lines (stderr), then print its metrics and ``label: <absolute output
    path>``."""
    from rlhf import tracking
    from rlhf.console.stage_report import reporting

    with (
        reporting(name) as record,
        tracking.stage_run(name, None, args.experiment, not args.no_track) as tracker,
    ):
        metrics = record.metrics = run(tracker)
    _print_metrics(metrics)
    print(f"{label}: {Path(output).resolve()}")
    return 0


def cmd_demo_data(args: argparse.Namespace) -> int:
    from rlhf.config import DemoConfig
    from rlhf.data.demo_task import write_demo_files

    files = write_demo_files(args.out, _config(DemoConfig, args, "demo"))
    for name, path in files.items():
        print(f"{name}: {path}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from rlhf.config import PrepareConfig
    from rlhf.stages import prepare

    config = _config(PrepareConfig, args, "prepare")
    if args.skip_invalid:
        config.skip_invalid = True
    if args.format:
        config.format = args.format
    out = Path(args.out)
    inputs = prepare.PrepareInputs(
        args.sft or [], args.preferences or [], args.prompts or [], args.eval_prompts or []
    )
    outputs = prepare.PrepareOutputs(
        str(out / "sft"),
        str(out / "preferences"),
        str(out / "prompts"),
        str(out / "eval_prompts"),
        str(out / "rejects.jsonl"),
    )
    return _run_stage(
        args, "prepare", lambda t: prepare.run(config, inputs, outputs, t), "prepared data", out
    )


def cmd_sft(args: argparse.Namespace) -> int:
    from rlhf.config import SFTConfig
    from rlhf.stages import sft

    config = _config(SFTConfig, args, "sft")
    inputs, outputs = sft.SFTInputs(args.data), sft.SFTOutputs(args.out)
    return _run_stage(args, "sft", lambda t: sft.run(config, inputs, outputs, t), "model", args.out)


def cmd_reward(args: argparse.Namespace) -> int:
    from rlhf.config import RewardConfig
    from rlhf.stages import reward

    config = _config(RewardConfig, args, "reward")
    inputs = reward.RewardInputs(args.data, args.base_model)
    outputs = reward.RewardOutputs(args.out)
    return _run_stage(
        args, "reward", lambda t: reward.run(config, inputs, outputs, t),
        "reward model", args.out,
    )  # fmt: skip


def cmd_ppo(args: argparse.Namespace) -> int:
    from rlhf.config import PPOConfig
    from rlhf.stages import ppo

    config = _config(PPOConfig, args, "ppo")
    inputs = ppo.PPOInputs(args.prompts, args.sft_model, args.reward_model, args.sft_data)
    outputs = ppo.PPOOutputs(args.out)
    return _run_stage(
        args, "ppo", lambda t: ppo.run(config, inputs, outputs, t), "policy", args.out
    )


def cmd_dpo(args: argparse.Namespace) -> int:
    from rlhf.config import DPOConfig
    from rlhf.stages import dpo

    config = _config(DPOConfig, args, "dpo")
    inputs, outputs = dpo.DPOInputs(args.data, args.sft_model), dpo.DPOOutputs(args.out)
    return _run_stage(
        args, "dpo", lambda t: dpo.run(config, inputs, outputs, t), "policy", args.out
    )


def cmd_grpo(args: argparse.Namespace) -> int:
    from rlhf.config import GRPOConfig
    from rlhf.stages import grpo

    config = _config(GRPOConfig, args, "grpo")
    inputs = grpo.GRPOInputs(args.prompts, args.sft_model, args.reward_model)
    outputs = grpo.GRPOOutputs(args.out)
    return _run_stage(
        args, "grpo", lambda t: grpo.run(config, inputs, outputs, t), "policy", args.out
    )


def cmd_evaluate(args: argparse.Namespace) -> int:
    from rlhf.config import EvalConfig
    from rlhf.stages import evaluate

    config = _config(EvalConfig, args, "eval")
    out = Path(args.out)
    inputs = evaluate.EvalInputs(
        args.eval_prompts, args.candidate, args.reference, args.reward_model, args.sft_data,
        args.other or [],
    )  # fmt: skip
    outputs = evaluate.EvalOutputs(str(out / "report.html"), str(out / "metrics.json"))
    return _run_stage(
        args, "evaluate", lambda t: evaluate.run(config, inputs, outputs, t),
        "report", out / "report.html",
    )  # fmt: skip


def _run_config(args: argparse.Namespace) -> dict[str, Any]:
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


# The task folders of a local run that hold a model, and what each is.
MODEL_TASKS = (
    ("supervised-finetune", "SFT model"),
    ("train-reward-model", "reward model"),
    ("ppo-train", "policy"),
    ("dpo-train", "policy"),
    ("grpo-train", "policy"),
)


def cmd_run(args: argparse.Namespace) -> int:
    from rlhf import tracking
    from rlhf.console.progress import format_duration
    from rlhf.console.stage_report import summary_table
    from rlhf.pipeline.local_run import run_local

    config = _run_config(args)
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
    for task, what in MODEL_TASKS:
        if (run_dir / task / "model").is_dir():
            print(f"{what + ':':<14}{run_dir / task / 'model'}")
    if (run_dir / "evaluate-policy" / "report").is_file():
        print(f"{'report:':<14}{run_dir / 'evaluate-policy' / 'report'} (HTML)")
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

    config, cluster_config = _run_config(args), load_cluster_config(args.cluster_config)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlhf", description="RLHF training: SFT, reward model and more, locally or on KFP."
    )
    parser.add_argument("--version", action="version", version=f"rlhf {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo-data", help="write the built-in demo task as JSONL files")
    p.add_argument("--out", required=True)
    _add_config_flags(p, "demo")
    p.set_defaults(fn=cmd_demo_data)

    p = sub.add_parser("prepare", help="validate and normalise data into the four artifacts")
    p.add_argument("--sft", action="append", help="SFT data file/folder/URI (repeatable)")
    p.add_argument("--preferences", action="append", help="preference data (repeatable)")
    p.add_argument("--prompts", action="append", help="RL prompts (repeatable)")
    p.add_argument("--eval-prompts", action="append", help="held-out evaluation prompts")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--skip-invalid", action="store_true", help="drop bad rows, list them")
    p.add_argument(
        "--format", help="force one input format for the inputs of the artifacts that accept it"
    )
    _add_config_flags(p, "prepare")
    p.set_defaults(fn=cmd_prepare)

    p = sub.add_parser("sft", help="supervised fine-tuning")
    p.add_argument("--data", required=True, help="prepared sft artifact folder")
    p.add_argument("--out", required=True, help="output model folder")
    _add_config_flags(p, "sft")
    p.set_defaults(fn=cmd_sft)

    p = sub.add_parser("reward", help="train a reward model on preference pairs")
    p.add_argument("--data", required=True, help="prepared preferences artifact folder")
    p.add_argument("--base-model", required=True, help="model to start from (the SFT model)")
    p.add_argument("--out", required=True, help="output model folder")
    _add_config_flags(p, "reward")
    p.set_defaults(fn=cmd_reward)

    p = sub.add_parser("ppo", help="PPO against the reward model with a KL penalty to SFT")
    p.add_argument("--prompts", required=True, help="prepared prompts artifact folder")
    p.add_argument("--sft-model", required=True, help="SFT model: policy start and reference")
    p.add_argument("--reward-model", required=True, help="reward model folder")
    p.add_argument("--sft-data", help="prepared sft artifact (needed for PPO-ptx)")
    p.add_argument("--out", required=True, help="output policy folder")
    _add_config_flags(p, "ppo")
    p.set_defaults(fn=cmd_ppo)

    p = sub.add_parser("dpo", help="direct preference optimisation of the SFT model (no RM)")
    p.add_argument("--data", required=True, help="prepared preferences artifact folder")
    p.add_argument("--sft-model", required=True, help="SFT model: policy start and reference")
    p.add_argument("--out", required=True, help="output policy folder")
    _add_config_flags(p, "dpo")
    p.set_defaults(fn=cmd_dpo)

    p = sub.add_parser("grpo", help="GRPO: group-relative RL against the RM, no critic")
    p.add_argument("--prompts", required=True, help="prepared prompts artifact folder")
    p.add_argument("--sft-model", required=True, help="SFT model: policy start and reference")
    p.add_argument(
        "--reward-model", help="reward model folder (not needed with reward_function set)"
    )
    p.add_argument("--out", required=True, help="output policy folder")
    _add_config_flags(p, "grpo")
    p.set_defaults(fn=cmd_grpo)

    p = sub.add_parser("evaluate", help="compare a policy with the reference on held-out prompts")
    p.add_argument("--eval-prompts", required=True, help="prepared eval_prompts artifact")
    p.add_argument("--candidate", required=True, help="policy to evaluate")
    p.add_argument("--reference", required=True, help="policy to compare with (the SFT model)")
    p.add_argument(
        "--reward-model", help="reward model used as a judge (without: gold, KL, length only)"
    )
    p.add_argument("--sft-data", help="prepared sft artifact, for held-out perplexity")
    p.add_argument("--other", action="append", help="more policies to rank by Elo (repeat)")
    p.add_argument("--out", required=True, help="folder for report.html and metrics.json")
    _add_config_flags(p, "eval")
    p.set_defaults(fn=cmd_evaluate)

    p = sub.add_parser("run", help="run the whole pipeline locally with kfp.local")
    p.add_argument(
        "--config",
        help="YAML with sections data, pipeline, prepare, demo, sft, reward, ppo, dpo, grpo, eval",
    )
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE")
    _add_pipeline_flag(p, "run")
    p.add_argument("--output-root", default="local_outputs", help="where task outputs go")
    p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    _add_verbose_flag(p)
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
        "kubectl create) and one component spec per stage. Images, resources, GPUs, secrets, "
        "retries and caching come from --cluster-config (see docs/configuration.md).",
    )
    p.add_argument("--out", default="pipelines", help="folder for packages (default: pipelines)")
    p.add_argument(
        "--components-out",
        default="components",
        help="folder for component specs (default: components)",
    )
    p.add_argument("--no-components", action="store_true", help="do not write component specs")
    _add_cluster_config_flag(p)
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
    _add_submission_flags(p)
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
    _add_submission_flags(q)
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
    q.set_defaults(fn=cmd_schedule_create)
    q = actions.add_parser("list", help="list the recurring runs", epilog=KFP_EPILOG)
    _add_kfp_flags(q)
    q.set_defaults(fn=cmd_schedule_list)
    q = actions.add_parser(
        "disable", help="disable a recurring run (it stays listed; no new runs start)",
        epilog=KFP_EPILOG,
    )  # fmt: skip
    q.add_argument("schedule", help="the recurring run's id or its (unique) name")
    _add_kfp_flags(q)
    q.set_defaults(fn=cmd_schedule_disable)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log_setup.configure(args.verbose)
    if getattr(args, "pipeline", "") is None:  # rlhf run, submit, schedule create
        from rlhf.pipeline.pipelines import PIPELINE_NAME

        args.pipeline = PIPELINE_NAME
    from rlhf.data.errors import DataError
    from rlhf.pipeline.local_run import PipelineFailed
    from rlhf.redaction import redact
    from rlhf.storage import StorageError

    def fail(message: str, status: int) -> int:
        print(redact(f"rlhf {args.command}: {message}"), file=sys.stderr)
        return status

    api_errors: tuple[type[BaseException], ...] = ()
    if args.command in ("submit", "schedule"):
        from kfp_server_api import ApiException

        api_errors = (ApiException,)
    try:
        return args.fn(args)
    except api_errors as e:
        reason = getattr(e, "body", None) or getattr(e, "reason", "")
        return fail(f"the KFP API answered {e.status}: {reason}", 1)
    except PipelineFailed as e:
        return fail(f"{e} (the failing task's log is above)", 1)
    except DataError as e:
        return fail(f"invalid data: {e}", 2)
    except (ValueError, FileNotFoundError) as e:
        return fail(str(e), 2)
    except StorageError as e:
        return fail(str(e), 1)


if __name__ == "__main__":
    sys.exit(main())
