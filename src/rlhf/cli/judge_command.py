"""``rlhf judge``: AI feedback (RLAIF). A reward model, a ``module:function`` or a causal LM
labels a batch's tasks, writing the export ``rlhf label export`` writes, with its agreement
with human labels of the same tasks when ``--human`` exports are given."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rlhf.cli.arguments import add_verbose_flag
from rlhf.cli.stage_commands import config_from_args

SECTION = "judge"


def add_judge_command(sub: Any) -> None:
    p = sub.add_parser(
        "judge",
        help="label a batch with a judge (reward model, function or LM) instead of people",
        description="Rank each task's candidates with a judge and write the feedback export "
        "(docs/labelling.md, AI feedback).",
    )
    p.add_argument("--batch", required=True, help="labelling batch folder (or s3:// URI)")
    p.add_argument("--out", required=True, metavar="EXPORT", help="export folder or s3:// URI")
    p.add_argument(
        "--judge", required=True, metavar="KIND:TARGET",
        help="reward-model:DIR, function:module:fn (fn(prompt_messages, texts) -> scores) "
        "or lm:DIR (a causal LM judging each pair in both orders)",
    )  # fmt: skip
    p.add_argument(
        "--human", action="append", default=[], metavar="EXPORT",
        help="an export of human labels of the same tasks: report the judge's agreement "
        "with them (repeatable)",
    )  # fmt: skip
    p.add_argument(
        "--template-file", help="the LM judge's prompt template (the same as --set template=...)"
    )
    p.add_argument(
        "--config", help=f"YAML file; the judge reads its settings from its '{SECTION}:' section"
    )
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override one setting (repeat)"
    )
    add_verbose_flag(p)
    p.set_defaults(fn=cmd_judge)


def cmd_judge(args: argparse.Namespace) -> int:
    from rlhf.config import JudgeConfig
    from rlhf.labelling.judging import run_judge

    config = config_from_args(JudgeConfig, args, SECTION)
    if args.template_file:
        config.template = Path(args.template_file).read_text(encoding="utf-8")
        config.__post_init__()
    summary = run_judge(args.batch, args.out, args.judge, config, args.human)
    shown = {k: v for k, v in summary.items() if k != "judge_settings"}
    print(json.dumps(shown, indent=2))
    agreement = summary.get("human_agreement")
    if agreement is not None:
        rate = agreement["agreement"]
        print(
            f"agreement with human labels: "
            f"{'n/a' if rate is None else format(rate, '.1%')} "
            f"({agreement['agreed']} of {agreement['compared']} pairs both labelled)"
        )
    print(f"feedback export: {args.out}")
    return 0
