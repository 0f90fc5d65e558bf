"""One contender of one kind of work, in a process of its own (``side_by_side.py`` starts it):
``python benchmarks/contender.py INPUTS_DIR WORK WHO OUT.json``. It sets the torch threads and
seeds, chooses the clock (``Settings.clock``, ``bench_time.py``), runs the contender, and
writes what it measured with the process's time on that clock and its peak resident memory
(``ru_maxrss``: its own, plus its children's for the kfp.local round trip)."""

from __future__ import annotations

import importlib
import json
import resource
import sys
from pathlib import Path
from typing import Any

import bench_time
import torch
from bench_inputs import Inputs

# The kind of work -> the module that holds its contenders (functions ours, trl, bare).
WORKS = {
    "sft": "work_sft",
    "reward": "work_reward",
    "dpo": "work_dpo",
    "grpo": "work_grpo",
    "ppo": "work_ppo",
    "generation": "work_generation",
    "kfp_local": "work_kfp_local",
}


def measure(root: str, work: str, who: str, out: str) -> dict[str, Any]:
    """Run ``who``'s contender for ``work`` on the inputs under ``root``; write the report to
    ``out`` and return it. (``side_by_side.py --in-process`` calls this directly: quick, for
    the smoke test, but the peak RSS is then the whole process's so far.)"""
    inputs = Inputs.load(root)
    # kfp.local's work runs in child processes: their CPU time is not this process's.
    bench_time.use("wall" if work == "kfp_local" else inputs.settings.clock)
    started = bench_time.now()
    torch.set_num_threads(inputs.settings.threads)
    torch.manual_seed(inputs.settings.seed)
    scratch = Path(out).with_suffix(".scratch")
    measured = getattr(importlib.import_module(WORKS[work]), who)(inputs, scratch)
    wall = bench_time.now() - started
    peak_kib = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                   resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)  # fmt: skip
    report = {
        "work": work, "who": who, "clock": bench_time.chosen(), **measured, "wall_seconds": wall,
        # Everything outside the timed part: imports, loading, encoding, warm-up, publishing.
        "outside_seconds": wall - measured["seconds"], "peak_rss_mib": peak_kib / 1024,
    }  # fmt: skip
    Path(out).write_text(json.dumps(report, indent=1))
    return report


def main(argv: list[str]) -> None:
    measure(*argv)


if __name__ == "__main__":
    main(sys.argv[1:])
