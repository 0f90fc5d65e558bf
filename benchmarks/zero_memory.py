"""Memory per rank and throughput of one ~100M-parameter model trained on 2 CPU ranks under
plain PyTorch (DDP), DeepSpeed ZeRO 0, 1, 2, 3 and LoRA (r=16, DDP), through the project's own
engine.

Each configuration is one ``torchrun --standalone --nproc_per_node N`` launch of
``zero_memory_rank.py`` (gloo, one thread per rank), which writes one JSON per rank into
``--out``/round<k>/, ``--rounds`` times through every configuration; this script then writes
``results.json`` (every rank's record of every round) and ``table.md``.
What the byte counts include is in ``held_bytes.py``. Throughput is reported as a ratio to
plain PyTorch measured in the same round (median and range over the rounds): on a shared
machine the absolute tokens/s move with the other jobs, the ratios less so; the byte counts do
not move at all.

    python benchmarks/zero_memory.py --out bench_results/zero_memory
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from zero_memory_rank import CONFIGS

HERE = Path(__file__).resolve().parent
MIB = 1 << 20


def launch(config: str, out: Path, ranks: int, rank_args: list[str]) -> float:
    """Run one configuration on ``ranks`` ranks; its wall time in seconds."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={ranks}", str(HERE / "zero_memory_rank.py"),
           "--config", config, "--out", str(out), *rank_args]  # fmt: skip
    # One thread per rank: N ranks on N shared cores would thrash with more.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    started = time.time()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{config}: {' '.join(cmd)} failed:\n{done.stderr[-6000:]}")
    return time.time() - started


def table(records: list[dict[str, Any]]) -> str:
    """Markdown: per configuration the largest rank's bytes and their ratio to ZeRO-0's, the
    largest rank's RSS when the bytes were counted (heap trimmed) and at its peak, and tokens/s
    (the slowest rank's) as the median over rounds with the median and range of its ratio to
    plain PyTorch's in the same round."""
    by_config: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_config.setdefault(r["config"], []).append(r)

    def most(config: str, key: str) -> int:
        return max(r["bytes"][key] for r in by_config[config])

    def speeds(config: str) -> dict[int, float]:
        """Round -> the slowest rank's tokens/s."""
        out: dict[int, float] = {}
        for r in by_config[config]:
            out[r["round"]] = min(out.get(r["round"], math.inf), r["tokens_per_second"])
        return out

    base = most("zero0", "model_states")
    reference = speeds("pytorch")
    lines = [
        "| config | trained params | weights MiB | grads MiB | optimizer MiB | "
        "model states MiB (bytes/param) | vs ZeRO-0 | RSS MiB: at count / peak | tokens/s | "
        "vs PyTorch (range) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for config in (c for c in CONFIGS if c in by_config):
        first = by_config[config][0]
        states = most(config, "model_states")
        held = max(r["rss_bytes"]["after_last_backward"] for r in by_config[config])
        peak = max(r["rss_bytes"]["peak"] for r in by_config[config])
        tps = speeds(config)
        ratios = [tps[k] / reference[k] for k in tps]
        lines.append(
            f"| {config} | {first['trainable_parameters'] / 1e6:.1f}M "
            f"| {most(config, 'weights') / MIB:.0f} | {most(config, 'gradients') / MIB:.0f} "
            f"| {most(config, 'optimizer') / MIB:.0f} "
            f"| {states / MIB:.0f} ({states / first['parameters']:.2f}) "
            f"| {states / base:.3f} | {held / MIB:.0f} / {peak / MIB:.0f} "
            f"| {statistics.median(tps.values()):.0f} "
            f"| {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("bench_results/zero_memory"))
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    p.add_argument("--rounds", type=int, default=3, help="times through every configuration")
    p.add_argument("--size", default="100m", help="llama_shapes.SIZES")
    p.add_argument("--batch", type=int, default=2, help="sequences per rank per step")
    p.add_argument("--length", type=int, default=128, help="tokens per sequence")
    p.add_argument("--warmup", type=int, default=2, help="steps before the timed ones")
    p.add_argument("--steps", type=int, default=3, help="timed optimizer steps")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    args = p.parse_args()
    if "zero0" not in args.configs or "pytorch" not in args.configs:
        p.error("--configs must include zero0 and pytorch: the ratios are to them")

    rank_args = [f"--{k}={getattr(args, k)}"
                 for k in ("size", "batch", "length", "warmup", "steps", "precision")]  # fmt: skip
    records, walls = [], {}
    # Round after round through every configuration, so that a slow spell of the shared
    # machine falls on every configuration's rounds alike.
    for k in range(1, args.rounds + 1):
        out = args.out / f"round{k}"
        for config in args.configs:
            walls[f"{config}.round{k}"] = wall = launch(config, out, args.ranks, rank_args)
            print(f"round {k} {config}: {wall:.0f} s", flush=True)
            for rank in range(args.ranks):
                record = json.loads((out / f"{config}.rank{rank}.json").read_text())
                records.append({**record, "round": k})
    summary = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()} {_cpu_name()}, {os.cpu_count()} cores",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "settings": {**vars(args), "out": str(args.out)},
        "wall_seconds": walls,
        "records": records,
    }
    (args.out / "results.json").write_text(json.dumps(summary, indent=1) + "\n")
    text = table(records)
    (args.out / "table.md").write_text(text)
    print(text)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
