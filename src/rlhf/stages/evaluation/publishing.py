"""Where the evaluation's results go: the report and metrics files, the tracker's artifacts,
and one published folder (report, metrics, the gate's decision) at ``publish_to``."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from rlhf import storage
from rlhf.stages.champion_gate import GateDecision
from rlhf.stages.publish import publish_copy
from rlhf.stages.specs import EvalOutputs
from rlhf.tracking import Tracker

GATE_FILE = "gate.json"  # the gate's decision, beside the report when publishing
ARTIFACT_PATH = "evaluation"  # where the report goes in the tracker's artifacts


def write_outputs(outputs: EvalOutputs, report: str, metrics: dict[str, float]) -> None:
    """The report, and the metrics as JSON when ``outputs`` names a file for them (each
    written atomically)."""
    storage.atomic_write_text(outputs.report, report)
    if outputs.metrics:
        storage.atomic_write_text(outputs.metrics, json.dumps(metrics, indent=2, sort_keys=True))


def log_report(tracker: Tracker, outputs: EvalOutputs) -> None:
    """Log the report's folder when it holds only this stage's outputs; otherwise a temporary
    folder with copies of them (never upload unrelated files that share the folder)."""
    report = Path(outputs.report)
    files = [report] + ([Path(outputs.metrics)] if outputs.metrics else [])
    folder = report.parent
    if {p.resolve() for p in folder.iterdir()} <= {f.resolve() for f in files}:
        tracker.log_artifacts(folder, ARTIFACT_PATH)
        return
    with tempfile.TemporaryDirectory(prefix="rlhf-eval-") as tmp:
        for f in files:
            shutil.copy2(f, Path(tmp) / f.name)
        tracker.log_artifacts(tmp, ARTIFACT_PATH)


def publish(
    destination: str,
    outputs: EvalOutputs,
    metrics: dict[str, float],
    gate: GateDecision | None,
    tracker: Tracker,
) -> None:
    """Publish the report, the metrics and the gate's decision as one folder."""
    with tempfile.TemporaryDirectory(prefix="rlhf-eval-publish-") as tmp:
        folder = Path(tmp) / "evaluation"
        with storage.atomic_dir(folder) as out:
            shutil.copy2(outputs.report, out / "report.html")
            (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
            if gate is not None:
                (out / GATE_FILE).write_text(json.dumps(gate.as_dict(), indent=2, sort_keys=True))
            storage.write_manifest(out, {"artifact": "evaluation"})
        publish_copy(folder, destination, tracker, "evaluation")
