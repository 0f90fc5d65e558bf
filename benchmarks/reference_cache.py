"""Writing and reading the reference log-prob cache (DPO, KTO, the log_ratio reward head): the
JSON format used before against the safetensors file now, side by side in one run.

    python benchmarks/reference_cache.py --sizes 100000 1000000 --out bench_results/ref_cache

For each size (pairs: 90% train, 10% validation) the four float32 tensors the stage caches
(train/val chosen/rejected) are drawn at random from a seed, and each format is written, then
read, each in a fresh interpreter: what the operation took (wall seconds) and the process's
resident set at its peak (VmHWM, reset just before the operation), absolute and above the
resident set just before it. Rounds interleave the two formats; the read checks the values
against the drawn ones bit for bit. The old JSON writer and reader are kept here, as they were
in ``rlhf.modeling.preference_logprobs``, as the baseline.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FORMATS = ["json", "safetensors"]
KEY = "0" * 64  # a sha256 hex digest's length, like the stage's key


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _logprobs(pairs: int, seed: int) -> dict:
    import torch

    g = torch.Generator().manual_seed(seed)
    val = pairs // 10
    sizes = {"train": pairs - val, "val": val}
    return {
        f"{split}_{answer}": -torch.rand(n, generator=g) * 200  # summed answer log-probs
        for split, n in sizes.items()
        for answer in ("chosen", "rejected")
    }


def _write_json(path: Path, logprobs: dict) -> None:  # the old cache_json + atomic_write_text
    from rlhf import storage

    data = {"key": KEY, "logprobs": {k: v.tolist() for k, v in logprobs.items()}}
    storage.atomic_write_text(path, json.dumps(data))


def _read_json(path: Path) -> dict:  # the old read_reference_cache
    import torch

    data = json.loads(path.read_text(encoding="utf-8"))
    assert data.get("key") == KEY
    return {k: torch.tensor(v, dtype=torch.float32) for k, v in data["logprobs"].items()}


def _write_safetensors(path: Path, logprobs: dict) -> None:
    from rlhf import storage
    from rlhf.modeling.preference_logprobs import cache_bytes

    storage.atomic_write_bytes(path, cache_bytes(KEY, logprobs))


def _read_safetensors(path: Path) -> dict:
    from rlhf.modeling.preference_logprobs import read_reference_cache

    cached = read_reference_cache(path, KEY)
    assert cached is not None
    return cached


def measure(fmt: str, op: str, pairs: int, path: Path) -> dict:
    """In this interpreter: write or read ``path`` in format ``fmt``."""
    import torch

    import rlhf.modeling.preference_logprobs  # noqa: F401  (imports outside the measurement)

    expected = _logprobs(pairs, seed=pairs)
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before, start = _status("VmRSS"), time.perf_counter()
    if op == "write":
        (_write_json if fmt == "json" else _write_safetensors)(path, expected)
        held = None
    else:
        held = (_read_json if fmt == "json" else _read_safetensors)(path)
    seconds = time.perf_counter() - start
    peak = _status("VmHWM")
    row = {"format": fmt, "op": op, "pairs": pairs, "seconds": round(seconds, 3),
           "peak_rss_mb": round(peak / 2**20, 1),
           "peak_added_mb": round((peak - before) / 2**20, 1)}  # fmt: skip
    if held is not None:
        row["identical"] = held.keys() == expected.keys() and all(
            torch.equal(held[k].view(torch.int32), v.view(torch.int32)) for k, v in expected.items()
        )
    else:
        row["file_mb"] = round(path.stat().st_size / 2**20, 2)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", type=Path, help="folder for reference_cache.json")
    p.add_argument("--measure", nargs=4, metavar=("FORMAT", "OP", "PAIRS", "PATH"),
                   help=argparse.SUPPRESS)  # fmt: skip
    args = p.parse_args(argv)
    if args.measure:
        fmt, op, pairs, path = args.measure
        print(json.dumps(measure(fmt, op, int(pairs), Path(path))))
        return 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = datetime.datetime.now(datetime.timezone.utc)
    load_start = tuple(round(x, 2) for x in os.getloadavg())
    results = []
    work = Path(tempfile.mkdtemp(prefix="reference-cache-"))
    try:
        for round_ in range(args.rounds):
            for size in args.sizes:
                order = FORMATS if round_ % 2 == 0 else FORMATS[::-1]
                for fmt in order:
                    path = work / f"cache.{fmt}"
                    for op in ("write", "read"):
                        done = subprocess.run(
                            [sys.executable, __file__, "--measure", fmt, op, str(size), str(path)],
                            env=env, check=True, capture_output=True, text=True,
                        )  # fmt: skip
                        row = {"round": round_, **json.loads(done.stdout.splitlines()[-1])}
                        results.append(row)
                        print(json.dumps(row), flush=True)
                    path.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {
        "date": started.isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": {"start": load_start, "end": tuple(round(x, 2) for x in os.getloadavg())},
        "results": results,
    }
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "reference_cache.json").write_text(json.dumps(report, indent=2) + "\n")
    load = report["load_average"]
    print(
        f"\n{report['date']}, load average {load['start']} at the start, {load['end']} at the end"
    )
    print("\n| pairs | format | op | seconds (per round) | peak RSS MB | peak added MB | file MB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for size in args.sizes:
        for fmt in FORMATS:
            for op in ("write", "read"):
                rows = [r for r in results if (r["pairs"], r["format"], r["op"]) == (size, fmt, op)]
                seconds = ", ".join(str(r["seconds"]) for r in rows)
                file_mb = next((r["file_mb"] for r in results
                                if (r["pairs"], r["format"], r["op"]) == (size, fmt, "write")), "")  # fmt: skip
                print(f"| {size:,} | {fmt} | {op} | {seconds} | "
                      f"{max(r['peak_rss_mb'] for r in rows)} | "
                      f"{max(r['peak_added_mb'] for r in rows)} | {file_mb} |")  # fmt: skip
    if not all(r.get("identical", True) for r in results):
        print("values read back differ from those written", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
