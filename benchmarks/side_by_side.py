"""The project's stages side by side with TRL's trainers and bare PyTorch loops, for each kind
of work: SFT, the reward model, DPO, GRPO, PPO (against TRL's RLOOTrainer) and rollout
generation (against ``model.generate``), plus the fixed cost of a stage under ``kfp.local``.

Every contender runs in its own process (``contender.py``: a clean peak RSS, no cross-talk)
on the same inputs (``bench_inputs.py``: the demo data, a 4-layer 256-wide Llama), batch,
number of optimizer steps, torch threads and seed. Rounds are repeated (``--repeats``) and
within a round the contenders of a kind run one after the other, in an order that rotates
from round to round; the ratios ours/TRL and ours/bare are taken within each round (the
machine is shared and its speed moves), and the table gives their median and range.

    python benchmarks/side_by_side.py --out bench_results/side_by_side     # make bench

Throughput is counted the same way for all contenders of a kind: rows (SFT) or pairs (reward,
DPO) per second of training, completions generated and trained on per second (GRPO, PPO),
response tokens per second (generation), over the timed part: from the end of the first
optimizer step or iteration (a warm-up) to the end of the last. Loading, encoding, the warm-up
and publishing are reported apart ("outside"). TRL is optional: without it the TRL column is
empty.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_inputs import Settings, make_inputs  # noqa: E402

WORKS = ("sft", "reward", "dpo", "grpo", "ppo", "generation", "kfp_local")
CONTENDERS = ("ours", "trl", "bare")
# What the issue asks of each ratio (issue 18): ours/TRL and ours/bare.
TARGETS = {"generation": (2.0, 0.9)}
DEFAULT_TARGET = (1.3, 0.9)


def _run_contender(inputs: Path, work: str, who: str, out: Path, threads: int,
                   timeout: float, in_process: bool) -> dict[str, Any]:  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    if in_process:
        from contender import measure

        try:
            return measure(str(inputs), work, who, str(out))
        except Exception as e:  # noqa: BLE001 - reported in the table, the others still run
            return {"work": work, "who": who, "error": f"{type(e).__name__}: {e}"}
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore",
           "TRANSFORMERS_VERBOSITY": "error", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}  # fmt: skip
    cmd = [sys.executable, str(HERE / "contender.py"), str(inputs), work, who, str(out)]
    log = out.with_suffix(".log")
    with log.open("w") as sink:
        try:
            done = subprocess.run(cmd, stdout=sink, stderr=subprocess.STDOUT, env=env,
                                  timeout=timeout, check=False)  # fmt: skip
        except subprocess.TimeoutExpired:
            return {"work": work, "who": who, "error": f"timed out after {timeout:.0f}s ({log})"}
    if done.returncode != 0 or not out.exists():
        tail = log.read_text()[-2000:]
        return {"work": work, "who": who, "error": f"exit {done.returncode} ({log}): {tail}"}
    return json.loads(out.read_text())


def rate(report: dict[str, Any] | None) -> float | None:
    if not report or "error" in report or report.get("seconds", 0) <= 0:
        return None
    return report["units"] / report["seconds"]


def _spread(values: list[float], digits: int = 2) -> str:
    if not values:
        return "n/a"
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


def summarise(rounds: list[dict[str, dict[str, Any]]], works: list[str]) -> dict[str, Any]:
    """Per kind of work: each round's ratios ours/TRL and ours/bare, and each contender's
    median throughput, tokens/s, time outside the timed part and peak RSS."""
    out: dict[str, Any] = {}
    for work in works:
        per = {who: [r[work][who] for r in rounds if who in r.get(work, {})] for who in CONTENDERS}
        entry: dict[str, Any] = {"ratios": {}, "contenders": {}}
        for other in ("trl", "bare"):
            ratios = []
            for r in rounds:
                mine, theirs = rate(r.get(work, {}).get("ours")), rate(r.get(work, {}).get(other))
                if mine and theirs:
                    ratios.append(mine / theirs)
            entry["ratios"][other] = ratios
        for who, reports in per.items():
            good = [x for x in reports if "error" not in x]
            if not reports:
                continue
            entry["contenders"][who] = {
                "unit": good[0]["unit"] if good else None,
                "per_second": [x["units"] / x["seconds"] for x in good],
                "tokens_per_second": [x["tokens"] / x["seconds"] for x in good if "tokens" in x],
                "seconds": [x["seconds"] for x in good],
                "outside_seconds": [x["outside_seconds"] for x in good],
                "peak_rss_mib": [x["peak_rss_mib"] for x in good],
                "response_length_mean": [
                    x["response_length_mean"] for x in good if "response_length_mean" in x
                ],  # fmt: skip
                "errors": [x["error"] for x in reports if "error" in x],
            }
        out[work] = entry
    return out


def _median(values: list[float], digits: int = 1) -> str:
    return f"{statistics.median(values):,.{digits}f}" if values else "n/a"


def table(summary: dict[str, Any]) -> str:
    """One markdown table: a row per kind of work."""
    head = ("| work | unit/s: ours | TRL | bare | ours/TRL | ours/bare | target | "
            "tokens/s: ours | TRL | bare | outside s: ours | TRL | bare | "
            "peak RSS MiB: ours | TRL | bare |")  # fmt: skip
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for work, entry in summary.items():
        c = entry["contenders"]

        def col(who: str, key: str, digits: int = 1, c: dict[str, Any] = c) -> str:
            return _median(c[who][key], digits) if who in c else "n/a"

        if work == "kfp_local":
            lines.append(f"| kfp.local round trip of a no-op stage (s) | "
                         f"{_spread(c['ours']['seconds'])} | | | | | | | | | | | | "
                         f"{col('ours', 'peak_rss_mib', 0)} | | |")  # fmt: skip
            continue
        trl_target, bare_target = TARGETS.get(work, DEFAULT_TARGET)
        unit = c["ours"]["unit"] if "ours" in c and c["ours"]["unit"] else ""
        lines.append(
            f"| {work} ({unit}) | {col('ours', 'per_second', 2)} | {col('trl', 'per_second', 2)}"
            f" | {col('bare', 'per_second', 2)} | {_spread(entry['ratios']['trl'])}"
            f" | {_spread(entry['ratios']['bare'])} | >= {trl_target} / >= {bare_target}"
            f" | {col('ours', 'tokens_per_second', 0)} | {col('trl', 'tokens_per_second', 0)}"
            f" | {col('bare', 'tokens_per_second', 0)}"
            f" | {col('ours', 'outside_seconds')} | {col('trl', 'outside_seconds')}"
            f" | {col('bare', 'outside_seconds')} | {col('ours', 'peak_rss_mib', 0)}"
            f" | {col('trl', 'peak_rss_mib', 0)} | {col('bare', 'peak_rss_mib', 0)} |"
        )
    return "\n".join(lines)


def _versions() -> dict[str, str]:
    import torch
    import transformers

    out = {"python": platform.python_version(), "torch": torch.__version__,
           "transformers": transformers.__version__}  # fmt: skip
    if importlib.util.find_spec("trl"):
        import trl

        out["trl"] = trl.__version__
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench_results/side_by_side"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--works", nargs="+", choices=WORKS, default=list(WORKS))
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per contender")
    parser.add_argument("--in-process", action="store_true",
                        help="run the contenders in this process (a quick smoke run; the peak "
                        "RSS is then not each contender's own)")  # fmt: skip
    for f in fields(Settings):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default),
                            default=f.default)  # fmt: skip
    args = parser.parse_args(argv)
    settings = Settings(**{f.name: getattr(args, f.name) for f in fields(Settings)})
    if settings.steps < 2:
        raise SystemExit("--steps must be at least 2: the first step is an untimed warm-up")
    if (settings.prompts * settings.group) % settings.batch:
        raise SystemExit("--batch must divide --prompts x --group (the RL minibatches)")
    has_trl = importlib.util.find_spec("trl") is not None
    if not has_trl:
        print("trl is not installed (pip install -e '.[bench]'): no TRL column", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    inputs = make_inputs(args.out / "inputs", settings)
    rounds: list[dict[str, dict[str, Any]]] = []
    for k in range(args.repeats):
        results: dict[str, dict[str, Any]] = {}
        for work in args.works:
            order = ["ours"] if work == "kfp_local" else [
                w for w in args.contenders if w != "trl" or has_trl]  # fmt: skip
            shift = k % len(order)
            for who in order[shift:] + order[:shift]:  # a different contender first each round
                report = _run_contender(Path(inputs.root), work, who,
                                        args.out / f"round{k + 1}" / f"{work}.{who}.json",
                                        settings.threads, args.timeout,
                                        args.in_process)  # fmt: skip
                results.setdefault(work, {})[who] = report
                what = report.get("error", "").splitlines()[0][:200] if "error" in report else (
                    f"{rate(report):.2f} {report['unit']}/s")  # fmt: skip
                print(f"round {k + 1}/{args.repeats} {work:10s} {who:4s} {what}", flush=True)
        rounds.append(results)
    summary = summarise(rounds, args.works)
    text = table(summary)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "seconds": time.time() - started, "machine": f"{platform.node()}, {os.cpu_count()} CPUs",
        "versions": _versions(), "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "settings": asdict(settings), "repeats": args.repeats, "summary": summary,
        "rounds": rounds,
    }  # fmt: skip
    (args.out / "results.json").write_text(json.dumps(report, indent=1))
    (args.out / "table.md").write_text(text + "\n")
    print(text)
    return report


if __name__ == "__main__":
    main()
