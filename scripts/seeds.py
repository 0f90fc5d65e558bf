"""Run a pipeline over several seeds and report each headline metric as mean ± sd.

    python scripts/seeds.py run --pipeline ppo --seeds 0 1 2 --output-root seed_runs
    python scripts/seeds.py table seed_runs/ppo-seed0 seed_runs/ppo-seed1 ...

``run`` calls ``rlhf run --pipeline P --set pipeline.seed=S`` once per seed (every training
stage and the evaluation take that seed; the demo data keep ``demo.seed``), each into its own
output root, then prints the table. ``table`` prints it for runs made earlier. The table is
Markdown, the form docs/results.md quotes; a win rate over 800 paired samples carries a
standard error of about 1.7 points, so the spread over seeds is what a reader should compare.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

# Each task's metrics reported, by the task's name prefix, in this order (KFP's Metrics write
# "/" as "."; those a run lacks are left out).
TASK_METRICS = {
    "sft": ("val_loss",),
    "reward": ("gold_accuracy", "accuracy"),
    "evaluate": (
        "win_rate_gold",
        "win_rate_rm",
        "kl_candidate_reference",
        "candidate.gold_mean",
        "reference.gold_mean",
        "candidate.length_mean",
    ),
}
STABILITY_WINDOW = 16  # the last iterations of an RL stage whose spread is reported


def _executor_metrics(task_dir: Path) -> dict[str, float]:
    """The KFP ``Metrics`` a task of a ``kfp.local`` run logged (its executor_output.json)."""
    out = json.loads((task_dir / "executor_output.json").read_text())
    metrics: dict[str, float] = {}
    for artifact in out.get("artifacts", {}).get("metrics", {}).get("artifacts", []):
        metrics.update({k: float(v) for k, v in artifact.get("metadata", {}).items()})
    return metrics


def _history(run_dir: Path) -> list[dict[str, float]]:
    found = sorted(run_dir.glob("*/model/training_history.json"))
    return json.loads(found[0].read_text()) if found else []


def run_summary(output_root: Path) -> dict[str, float]:
    """Headline metrics of the newest pipeline run under ``output_root``: the evaluation's,
    each stage's wall time, and for an RL stage the mean, sd and range of its batch KL and gold
    reward over its last iterations (how settled the run is where it stops)."""
    runs = sorted((p for p in output_root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise SystemExit(f"{output_root}: no pipeline run in it")
    run_dir = runs[-1]
    summary: dict[str, float] = {}
    for task in sorted(p for p in run_dir.iterdir() if (p / "executor_output.json").exists()):
        metrics = _executor_metrics(task)
        for prefix, keys in TASK_METRICS.items():
            if task.name.startswith(prefix):
                summary.update({f"{prefix} {k}": metrics[k] for k in keys if k in metrics})
        if "seconds" in metrics:
            summary[f"seconds {task.name}"] = metrics["seconds"]
    last = _history(run_dir)[-STABILITY_WINDOW:]
    for key, name in (("kl/mean", "batch KL"), ("gold/mean", "batch gold")):
        values = [h[key] for h in last if key in h]
        if len(values) > 1:
            summary[f"last {len(values)} its: {name} mean"] = statistics.fmean(values)
            summary[f"last {len(values)} its: {name} sd"] = statistics.stdev(values)
            summary[f"last {len(values)} its: {name} min"] = min(values)
            summary[f"last {len(values)} its: {name} max"] = max(values)
    return summary


def table(summaries: dict[str, dict[str, float]]) -> str:
    """Markdown: one row per metric, one column per run, then mean ± sd over the runs."""
    names = list(summaries)
    keys = list(dict.fromkeys(k for s in summaries.values() for k in s))
    lines = [
        "| metric | " + " | ".join(names) + " | mean ± sd |",
        "| --- |" + " --- |" * (len(names) + 1),
    ]
    for key in keys:
        values = [summaries[n].get(key) for n in names]
        present = [v for v in values if v is not None]
        spread = (
            f"{statistics.fmean(present):.3f} ± {statistics.stdev(present):.3f}"
            if len(present) > 1
            else "(one run)"
        )
        cells = ["" if v is None else f"{v:.3f}" for v in values]
        lines.append(f"| {key} | " + " | ".join(cells) + f" | {spread} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the pipeline once per seed, then print the table")
    run.add_argument("--pipeline", default="ppo")
    run.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    run.add_argument("--output-root", type=Path, default=Path("seed_runs"))
    run.add_argument("--set", action="append", default=[], help="section.field=value")
    show = sub.add_parser("table", help="print the table for earlier runs' output roots")
    show.add_argument("roots", type=Path, nargs="+")
    args = parser.parse_args(argv)

    if args.command == "table":
        print(table({str(root): run_summary(root) for root in args.roots}))
        return 0
    summaries = {}
    for seed in args.seeds:
        root = args.output_root / f"{args.pipeline}-seed{seed}"
        command = [
            Path(sys.executable).with_name("rlhf"), "run", "--pipeline", args.pipeline,
            "--output-root", root, "--set", f"pipeline.seed={seed}",
            *[a for s in args.set for a in ("--set", s)],
        ]  # fmt: skip
        started = time.time()
        subprocess.run([str(c) for c in command], check=True)
        summaries[f"seed {seed}"] = {**run_summary(root), "wall seconds": time.time() - started}
    print(table(summaries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
