"""Wall time and peak memory of ``rlhf prepare`` as its input grows.

For each size it writes deterministic JSONL inputs (preference pairs of about 300 bytes, and
with ``--kinds`` also SFT rows and prompts), runs the real command line
(``python -m rlhf prepare ... --no-track``) in a subprocess and records the wall time and the
child's peak resident set (``os.wait4``'s rusage, so each run is measured alone).

    python benchmarks/prepare_scaling.py --sizes 10000 100000 1000000 --out bench_results/prep
    python benchmarks/prepare_scaling.py --sizes 10000000 --out bench_results/prep   # ~3 GB input

``--pythonpath`` runs another checkout's sources; ``--baseline`` runs a second checkout (e.g.
the code before a change) on the same input right after each size's run, so both columns see
the same load on a shared machine and their time ratio means something. Inputs and outputs are written under ``--work`` (default: a temporary folder) and
removed after each size unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

# One row in DUPLICATE_EVERY repeats an earlier row (dedupe has work to do) and rows share a
# prompt in pairs (the split keeps them together), as real preference data does.
DUPLICATE_EVERY = 50
WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "seven",
    "wise",
    "owls",
    "watch",
    "it",
]


def _text(i: int, salt: int, words: int) -> str:
    # A cheap deterministic word sequence: different for every (i, salt).
    x = (i * 2654435761 + salt * 40503) & 0xFFFFFFFF
    out = []
    for _ in range(words):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        out.append(WORDS[x % len(WORDS)])
    return " ".join(out)


def preference_row(i: int) -> dict:
    if i % DUPLICATE_EVERY == DUPLICATE_EVERY - 1:
        i -= 1  # an exact repeat of the row before
    prompt = i // 2  # two answers pairs per prompt
    return {
        "prompt": f"Question {prompt}: {_text(prompt, 1, 14)}?",
        "chosen": f"Answer {i}: {_text(i, 2, 16)}.",
        "rejected": f"Answer {i}: {_text(i, 3, 16)}!",
    }


def sft_row(i: int) -> dict:
    return {"prompt": f"Task {i}: {_text(i, 4, 14)}", "response": f"Done {i}: {_text(i, 5, 20)}."}


def prompt_row(i: int) -> dict:
    return {"prompt": f"Prompt {i}: {_text(i, 6, 20)}?"}


KINDS = {"preferences": preference_row, "sft": sft_row, "prompts": prompt_row}


def write_input(path: Path, kind: str, rows: int) -> int:
    make = KINDS[kind]
    with open(path, "w", encoding="utf-8") as f:
        for start in range(0, rows, 10_000):
            f.write(
                "".join(json.dumps(make(i)) + "\n" for i in range(start, min(rows, start + 10_000)))
            )
    return path.stat().st_size


def run_prepare(inputs: dict[str, Path], out: Path, pythonpath: str | None) -> dict:
    cmd = [sys.executable, "-m", "rlhf", "prepare", "--out", str(out), "--no-track"]
    for kind, path in inputs.items():
        cmd += [f"--{kind}", str(path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    start = time.perf_counter()
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # wait4 gives this child's own rusage; ru_maxrss is in KiB on Linux.
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    stdout, stderr = child.stdout.read(), child.stderr.read()  # type: ignore[union-attr]
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"prepare failed ({child.returncode}):\n{stderr.decode()[-4000:]}")
    metrics, _ = json.JSONDecoder().raw_decode(stdout.decode())  # then "<label>: <path>"
    return {"seconds": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "metrics": metrics}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--kinds", nargs="+", choices=sorted(KINDS), default=["preferences"])
    p.add_argument("--out", type=Path, help="folder for prepare_scaling.json")
    p.add_argument("--work", type=Path, help="where inputs and outputs go (default: a temp dir)")
    p.add_argument("--pythonpath", help="PYTHONPATH for the prepare subprocess (another checkout)")
    p.add_argument("--baseline", help="PYTHONPATH of code to run too, interleaved per size")
    p.add_argument("--label", default="", help="a name for this column (e.g. before, after)")
    p.add_argument("--keep", action="store_true", help="keep the inputs and outputs")
    args = p.parse_args(argv)

    work = args.work or Path(tempfile.mkdtemp(prefix="prepare-scaling-"))
    work.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for size in args.sizes:
            inputs = {kind: work / f"{kind}-{size}.jsonl" for kind in args.kinds}
            input_bytes = sum(write_input(path, kind, size) for kind, path in inputs.items())
            run = run_prepare(inputs, work / f"out-{size}", args.pythonpath)
            row = {"rows": size, "input_mb": round(input_bytes / 2**20, 1), **run}
            print(f"{size:>10,} rows  {row['input_mb']:>8} MB  {run['seconds']:>8} s  "
                  f"{run['peak_rss_mb']:>8} MB peak RSS", flush=True)  # fmt: skip
            if args.baseline:
                base = run_prepare(inputs, work / f"base-{size}", args.baseline)
                row["baseline"] = base
                same = base["metrics"] == run["metrics"]
                print(f"{'baseline':>15}  {'':>8}     {base['seconds']:>8} s  "
                      f"{base['peak_rss_mb']:>8} MB peak RSS  same metrics: {same}", flush=True)  # fmt: skip
            results.append(row)
            if not args.keep:
                for out in (work / f"out-{size}", work / f"base-{size}"):
                    shutil.rmtree(out, ignore_errors=True)
                for path in inputs.values():
                    path.unlink()
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    report = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "label": args.label,
        "baseline": args.baseline,
        "kinds": args.kinds,
        "results": results,
    }
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        name = f"prepare_scaling{'-' + args.label if args.label else ''}.json"
        (args.out / name).write_text(json.dumps(report, indent=2) + "\n")
    print("\n| rows | input MB | seconds | peak RSS MB | baseline s | baseline MB | time ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        b = r.get("baseline") or {}
        ratio = f"{r['seconds'] / b['seconds']:.2f}" if b else ""
        print(
            f"| {r['rows']:,} | {r['input_mb']} | {r['seconds']} | {r['peak_rss_mb']} | "
            f"{b.get('seconds', '')} | {b.get('peak_rss_mb', '')} | {ratio} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
