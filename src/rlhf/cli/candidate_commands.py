"""``rlhf label sample`` (the ``candidates`` stage: K answers per prompt from one or
more models) and ``rlhf label import-candidates`` (a JSONL file of tasks in the batch format),
both writing a labelling batch, local or ``s3://``. They join the ``rlhf label`` group through
:func:`add_candidate_commands`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rlhf.cli.arguments import add_config_flags
from rlhf.cli.stage_commands import config_from_args

SAMPLE_STAGE = "candidates"
# Flags that are shortcuts for --set <field>=...
_SAMPLE_FLAGS = {
    "k": (int, "candidates per prompt in all, split across the models (default 4)"),
    "temperature": (float, "sampling temperature (default 1.0)"),
    "top_p": (float, "nucleus sampling (default 1.0)"),
    "max_new_tokens": (int, "answer length limit in tokens (default 64)"),
    "seed": (int, "seeds torch before each model samples (default 0)"),
}


def add_candidate_commands(label_sub: Any) -> None:
    """``sample`` and ``import-candidates`` under the ``rlhf label`` subparsers."""
    p = label_sub.add_parser(
        "sample",
        help="sample K candidate answers per prompt from one or more models into a batch",
        description="Draw K answers per prompt (split across the models) into a labelling "
        "batch; duplicates within a task are drawn again (docs/labelling.md).",
    )
    p.add_argument(
        "--model", action="append", required=True, metavar="DIR",
        help="a model folder (or s3:// URI) to sample from; repeat for several models",
    )  # fmt: skip
    p.add_argument(
        "--prompts", required=True, metavar="DATA",
        help="a prepared prompts artifact, or any prompts file rlhf prepare reads",
    )  # fmt: skip
    p.add_argument("--out", required=True, metavar="BATCH", help="batch folder or s3:// URI")
    for name, (kind, help) in _SAMPLE_FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), type=kind, help=help)
    add_config_flags(p, SAMPLE_STAGE)
    p.set_defaults(fn=cmd_sample)

    p = label_sub.add_parser(
        "import-candidates",
        help="import tasks with their candidates from a JSONL file into a batch",
        description="Check a JSONL file of tasks {task_id, prompt, candidates: [{id, text, "
        "source?}]} and publish it as a labelling batch.",
    )
    p.add_argument("file", help="JSONL file of tasks (local or s3://)")
    p.add_argument("--out", required=True, metavar="BATCH", help="batch folder or s3:// URI")
    p.add_argument(
        "--source", help="source of candidates that name none (default: the file's name)"
    )
    p.set_defaults(fn=cmd_import_candidates)


def cmd_sample(args: argparse.Namespace) -> int:
    from rlhf.config import SampleConfig
    from rlhf.stages.specs import BatchOutputs, SampleInputs, get_stage
    from rlhf.stages.tracked_run import run_tracked

    spec = get_stage(SAMPLE_STAGE)
    config = config_from_args(SampleConfig, args, SAMPLE_STAGE)
    for name in _SAMPLE_FLAGS:
        if getattr(args, name) is not None:
            setattr(config, name, getattr(args, name))
    config.__post_init__()  # the flags' values get the same checks as the config's
    inputs = SampleInputs(args.prompts, args.model[0], args.model[1:])
    outputs = BatchOutputs.in_folder(args.out)
    metrics = run_tracked(spec, config, inputs, outputs, None, args.experiment, not args.no_track)
    print(json.dumps({k: round(v, 6) for k, v in metrics.items()}, indent=2))
    print(f"{spec.output_label}: {_shown(args.out)}")
    return 0


def cmd_import_candidates(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from rlhf.labelling.batch import read_tasks, write_batch

    source = args.source or Path(str(args.file).rstrip("/")).name
    tasks = [
        replace(t, candidates=tuple(replace(c, source=c.source or source) for c in t.candidates))
        for t in read_tasks(args.file)
    ]  # read whole first: a bad line fails before anything is written
    write_batch(tasks, args.out, {"imported_from": str(args.file)})
    print(f"tasks: {len(tasks)}")
    print(f"labelling batch: {_shown(args.out)}")
    return 0


def _shown(out: str) -> str:
    from rlhf.storage import is_s3

    return out if is_s3(out) else str(Path(out).resolve())
