"""The stage subcommands (``rlhf prepare``, ``rlhf sft``, ... ``rlhf evaluate``), all made from
the stage specs: each input port is a flag of the same name (``--sft-model``), ``--out`` the
output folder, the config comes from ``--config`` (the stage's section) and ``--set``. Also
``rlhf demo-data``, which writes the demo task's files."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from rlhf.cli.arguments import add_config_flags
from rlhf.stages.specs import STAGES, StageSpec, get_stage, ports
from rlhf.training.distributed import is_main_process


def config_from_args(cls: type, args: argparse.Namespace, section: str) -> Any:
    """The ``cls`` config from ``--config`` (its ``section``) and ``--set key=value``."""
    from rlhf.config import load_config, parse_overrides

    return load_config(cls, args.config, parse_overrides(args.set), section=section)


def _out_help(spec: StageSpec) -> str:
    outputs = ports(spec.outputs)
    if len(outputs) == 1:
        return f"output folder: the {spec.output_label}"
    return "output folder for " + ", ".join(p.name for p in outputs)


def _add_stage_command(sub: Any, spec: StageSpec) -> None:
    # Underscores become dashes, as in the flags: stage online_dpo is `rlhf online-dpo`.
    p = sub.add_parser(spec.name.replace("_", "-"), help=spec.help)
    for port in ports(spec.inputs):
        flag = "--" + port.name.replace("_", "-")
        if port.kind == "uris":
            p.add_argument(flag, action="append", default=[], help=f"{port.help} (repeatable)")
        else:
            p.add_argument(flag, required=port.required, help=port.help)
    p.add_argument("--out", required=True, help=_out_help(spec))
    fields = {f.name: f for f in dataclasses.fields(spec.config)}
    for name in spec.cli_flags:  # shortcuts for --set name=...
        flag = "--" + name.replace("_", "-")
        if fields[name].type in (bool, "bool"):
            p.add_argument(flag, action="store_true", help=f"the same as --set {name}=true")
        else:
            p.add_argument(flag, help=f"the same as --set {name}=...")
    add_config_flags(p, spec.name)
    p.set_defaults(fn=cmd_stage, stage=spec.name)


def cmd_stage(args: argparse.Namespace) -> int:
    """Run one stage in its own MLflow run unless --no-track, between its start and summary
    lines (stderr), then print its metrics and ``<output label>: <absolute output path>``."""
    from rlhf.stages.tracked_run import run_tracked

    spec = get_stage(args.stage)
    config = config_from_args(spec.config, args, spec.name)
    for name in spec.cli_flags:
        if getattr(args, name) not in (None, False):
            setattr(config, name, getattr(args, name))
    inputs = spec.inputs(**{p.name: getattr(args, p.name) for p in ports(spec.inputs)})
    outputs = spec.outputs.in_folder(args.out)
    metrics = run_tracked(spec, config, inputs, outputs, None, args.experiment, not args.no_track)
    if not is_main_process():  # under torchrun rank 0 alone reports
        return 0
    print(json.dumps({k: round(v, 6) for k, v in metrics.items()}, indent=2))
    # A stage with one output names it; one with several (prepare) names their folder.
    main_output = ports(spec.outputs)[0].name if len(ports(spec.outputs)) <= 2 else None
    shown = getattr(outputs, main_output) if main_output else args.out
    print(f"{spec.output_label}: {Path(shown).resolve()}")
    return 0


def cmd_demo_data(args: argparse.Namespace) -> int:
    from rlhf.config import DemoConfig
    from rlhf.data.demo_task import write_demo_files

    files = write_demo_files(args.out, config_from_args(DemoConfig, args, "demo"))
    for name, path in files.items():
        print(f"{name}: {path}")
    return 0


def add_stage_commands(sub: Any) -> None:
    """``demo-data`` and one subcommand per stage."""
    p = sub.add_parser("demo-data", help="write the built-in demo task as JSONL files")
    p.add_argument("--out", required=True)
    add_config_flags(p, "demo")
    p.set_defaults(fn=cmd_demo_data)
    for spec in STAGES.values():
        if not spec.command:  # a stage with a command of its own (rlhf label sample) has no other
            _add_stage_command(sub, spec)
