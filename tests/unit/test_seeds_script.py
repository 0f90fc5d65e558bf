"""scripts/seeds.py, which makes the mean ± sd tables of docs/results.md: what it reads from a
``kfp.local`` run folder and how it aggregates, on a run folder laid out as kfp.local writes it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "seeds.py"


@pytest.fixture(scope="module")
def seeds():
    spec = importlib.util.spec_from_file_location("seeds", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _task(run: Path, name: str, metrics: dict[str, float]) -> Path:
    (run / name).mkdir(parents=True)
    out = {"artifacts": {"metrics": {"artifacts": [{"name": "metrics", "metadata": metrics}]}}}
    (run / name / "executor_output.json").write_text(json.dumps(out))
    return run / name


def _run(root: Path, win: float, kls: list[float]) -> Path:
    run = root / "rlhf-ppo-2026-12-03-00-00-00-000000"
    _task(run, "sft", {"val_loss": 0.5, "seconds": 100.0})
    ppo = _task(run, "ppo", {"seconds": 90.0})
    (ppo / "model").mkdir()
    history = [{"step": i + 1, "kl/mean": kl, "gold/mean": 0.5} for i, kl in enumerate(kls)]
    (ppo / "model" / "training_history.json").write_text(json.dumps(history))
    _task(run, "evaluate", {"win_rate_gold": win, "candidate.gold_mean": 0.8})
    return root


def test_a_run_summary_reads_the_tasks_metrics_and_the_last_iterations(seeds, tmp_path):
    # 20 iterations: only the last 16 count, KL 1..16 -> mean 8.5, min 1, max 16
    root = _run(tmp_path / "a", 0.6, [100.0] * 4 + [float(k) for k in range(1, 17)])
    summary = seeds.run_summary(root)
    assert summary["evaluate win_rate_gold"] == 0.6
    assert summary["evaluate candidate.gold_mean"] == 0.8
    assert summary["sft val_loss"] == 0.5
    assert summary["seconds ppo"] == 90.0
    assert summary["last 16 its: batch KL mean"] == pytest.approx(8.5)
    assert (summary["last 16 its: batch KL min"], summary["last 16 its: batch KL max"]) == (1, 16)
    assert summary["last 16 its: batch gold sd"] == 0.0


def test_the_table_gives_mean_and_sample_sd_over_runs(seeds):
    text = seeds.table({"seed 0": {"win": 0.60}, "seed 1": {"win": 0.64}, "seed 2": {"x": 1.0}})
    lines = text.splitlines()
    assert lines[0] == "| metric | seed 0 | seed 1 | seed 2 | mean ± sd |"
    # mean 0.62, sample sd sqrt(((-0.02)^2 + 0.02^2) / 1) = 0.0283
    assert lines[2] == "| win | 0.600 | 0.640 |  | 0.620 ± 0.028 |"
    assert lines[3] == "| x |  |  | 1.000 | (one run) |"


def test_a_folder_without_a_run_is_an_error(seeds, tmp_path):
    with pytest.raises(SystemExit, match="no pipeline run"):
        seeds.run_summary(tmp_path)
