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


def _print_metrics(metrics: dict[str, float]) -> None:
    print(json.dumps({k: round(v, 6) for k, v in metrics.items()}, indent=2))


def cmd_demo_data(args: argparse.Namespace) -> int:
    from rlhf.config import DemoConfig
    from rlhf.data.demo_task import write_demo_files

    files = write_demo_files(args.out, _config(DemoConfig, args, "demo"))
    for name, path in files.items():
        print(f"{name}: {path}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from rlhf import tracking
    from rlhf.config import PrepareConfig
    from rlhf.data import prepare

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
    with tracking.stage_run("prepare", None, args.experiment, not args.no_track) as tracker:
        _print_metrics(prepare.run(config, inputs, outputs, tracker))
    print(f"prepared data: {out.resolve()}")
    return 0


def cmd_sft(args: argparse.Namespace) -> int:
    from rlhf import tracking
    from rlhf.config import SFTConfig
    from rlhf.stages import sft

    config = _config(SFTConfig, args, "sft")
    with tracking.stage_run("sft", None, args.experiment, not args.no_track) as tracker:
        metrics = sft.run(config, sft.SFTInputs(args.data), sft.SFTOutputs(args.out), tracker)
    _print_metrics(metrics)
    print(f"model: {Path(args.out).resolve()}")
    return 0


def cmd_reward(args: argparse.Namespace) -> int:
    from rlhf import tracking
    from rlhf.config import RewardConfig
    from rlhf.stages import reward

    config = _config(RewardConfig, args, "reward")
    with tracking.stage_run("reward", None, args.experiment, not args.no_track) as tracker:
        metrics = reward.run(
            config,
            reward.RewardInputs(args.data, args.base_model),
            reward.RewardOutputs(args.out),
            tracker,
        )
    _print_metrics(metrics)
    print(f"reward model: {Path(args.out).resolve()}")
    return 0


def cmd_ppo(args: argparse.Namespace) -> int:
    from rlhf import tracking
    from rlhf.config import PPOConfig
    from rlhf.stages import ppo

    config = _config(PPOConfig, args, "ppo")
    inputs = ppo.PPOInputs(args.prompts, args.sft_model, args.reward_model, args.sft_data)
    with tracking.stage_run("ppo", None, args.experiment, not args.no_track) as tracker:
        metrics = ppo.run(config, inputs, ppo.PPOOutputs(args.out), tracker)
    _print_metrics(metrics)
    print(f"policy: {Path(args.out).resolve()}")
    return 0


def cmd_dpo(args: argparse.Namespace) -> int:
    from rlhf import tracking
    from rlhf.config import DPOConfig
    from rlhf.stages import dpo

    config = _config(DPOConfig, args, "dpo")
    inputs = dpo.DPOInputs(args.data, args.sft_model)
    with tracking.stage_run("dpo", None, args.experiment, not args.no_track) as tracker:
        metrics = dpo.run(config, inputs, dpo.DPOOutputs(args.out), tracker)
    _print_metrics(metrics)
    print(f"policy: {Path(args.out).resolve()}")
    return 0


def cmd_grpo(args: argparse.Namespace) -> int:
    from rlhf import tracking
    from rlhf.config import GRPOConfig
    from rlhf.stages import grpo

    config = _config(GRPOConfig, args, "grpo")
    inputs = grpo.GRPOInputs(args.prompts, args.sft_model, args.reward_model)
    with tracking.stage_run("grpo", None, args.experiment, not args.no_track) as tracker:
        metrics = grpo.run(config, inputs, grpo.GRPOOutputs(args.out), tracker)
    _print_metrics(metrics)
    print(f"policy: {Path(args.out).resolve()}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from rlhf import tracking
    from rlhf.config import EvalConfig
    from rlhf.stages import evaluate

    config = _config(EvalConfig, args, "eval")
    out = Path(args.out)
    inputs = evaluate.EvalInputs(
        args.eval_prompts, args.candidate, args.reference, args.reward_model, args.sft_data,
        args.other or [],
    )  # fmt: skip
    outputs = evaluate.EvalOutputs(str(out / "report.html"), str(out / "metrics.json"))
    with tracking.stage_run("evaluate", None, args.experiment, not args.no_track) as tracker:
        metrics = evaluate.run(config, inputs, outputs, tracker)
    _print_metrics(metrics)
    print(f"report: {(out / 'report.html').resolve()}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from rlhf import tracking
    from rlhf.config import parse_overrides
    from rlhf.pipeline.local_run import run_local

    config: dict[str, Any] = {}
    if args.config:
        config = yaml.safe_load(Path(args.config).read_text(encoding="utf-8")) or {}
    if not isinstance(config, dict):
        raise ValueError(f"{args.config}: expected a mapping of sections")
    for key, value in parse_overrides(args.set).items():
        section, _, field = key.partition(".")
        if not field:
            raise ValueError(f"--set for rlhf run takes section.field=value, got {key!r}")
        config[section] = config.get(section) or {}  # an empty section reads as None
        config[section][field] = yaml.safe_load(value)
    if args.no_track:
        config.setdefault("pipeline", {})["track"] = False
    result = run_local(config, args.output_root, args.pipeline)
    print()
    print(f"pipeline run: {result.pipeline_run}")
    print(f"outputs:      {result.run_dir}")
    for task in sorted(p for p in result.run_dir.iterdir() if p.is_dir()):
        for artifact in sorted(p for p in task.iterdir() if p.name != "executor_output.json"):
            print(f"  {task.name}/{artifact.name}")
    if result.mlflow_parent_run_id:
        print(f"MLflow:       {tracking.describe_location()}")
        print(f"  parent run: {result.mlflow_parent_run_id} (experiment '{result.experiment}')")
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    from rlhf.pipeline.compile import compile_all

    for path in compile_all(args.out):
        print(path)
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
    p.add_argument(
        "--pipeline",
        default="ppo",
        choices=["ppo", "dpo", "grpo"],
        help="which algorithm's pipeline to run (default: ppo)",
    )
    p.add_argument("--output-root", default="local_outputs", help="where task outputs go")
    p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("compile", help="compile the pipelines into KFP YAML")
    p.add_argument("--out", default="pipelines")
    p.set_defaults(fn=cmd_compile)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log_setup.configure(args.verbose)
    from rlhf.data.errors import DataError
    from rlhf.pipeline.local_run import PipelineFailed

    try:
        return args.fn(args)
    except PipelineFailed as e:
        print(f"rlhf {args.command}: {e} (the failing task's log is above)", file=sys.stderr)
        return 1
    except DataError as e:
        print(f"rlhf {args.command}: invalid data: {e}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as e:
        print(f"rlhf {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
