"""The side-by-side benchmarks keep running: a smoke run of ``benchmarks/side_by_side.py`` on
the micro model, 2 steps, 1 round, its contenders in-process, prints a table with a row per
kind of work (and the kfp.local round trip), each with a throughput for every contender."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
KINDS = ("sft", "reward", "dpo", "grpo", "ppo", "generation")


@pytest.mark.benchmarks  # a benchmark smoke run: make test-benchmarks
def test_side_by_side_prints_the_table_for_every_kind_of_work(tmp_path):
    cmd = [
        sys.executable, str(BENCHMARKS / "side_by_side.py"), "--out", str(tmp_path),
        "--in-process", "--repeats", "1", "--size", "micro", "--steps", "2", "--batch", "2",
        "--prompts", "2", "--group", "2", "--new-tokens", "4", "--gen-batch", "2",
        "--gen-rounds", "1", "--max-length", "128", "--max-prompt-length", "96",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "results.json").read_text())
    contenders = ("ours", "trl", "bare") if importlib.util.find_spec("trl") else ("ours", "bare")
    for kind in KINDS:
        entry = report["summary"][kind]
        for who in contenders:
            assert not entry["contenders"][who]["errors"], entry["contenders"][who]["errors"]
            assert entry["contenders"][who]["per_second"][0] > 0, (kind, who)
        assert len(entry["ratios"]["bare"]) == 1
        row = next(line for line in done.stdout.splitlines() if line.startswith(f"| {kind} ("))
        assert "n/a" not in row.split("|")[2:7], row
    assert report["summary"]["kfp_local"]["contenders"]["ours"]["seconds"][0] > 0
    assert "| kfp.local round trip" in done.stdout


def test_the_package_never_imports_trl():
    """TRL is a benchmark dependency (the ``bench`` extra), never the package's."""
    package = Path(__file__).resolve().parents[2] / "src" / "rlhf"
    offenders = [
        str(path)
        for path in package.rglob("*.py")
        for line in path.read_text().splitlines()
        if line.strip().startswith(("import trl", "from trl"))
    ]
    assert offenders == []
    code = "import sys, rlhf.cli.main, rlhf.stages.grpo; print('trl' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr[-2000:]
