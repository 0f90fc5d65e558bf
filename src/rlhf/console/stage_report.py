"""One line when a stage starts, one when it ends (its time and headline metrics), and the table
of every stage that ``rlhf run`` prints at the end. Which metrics are a stage's headlines is
declared in its spec (``rlhf.stages.specs``), which hands them to :func:`reporting`.

The same lines come from the stage commands (``rlhf sft``) and from the pipeline's tasks. A task
under ``rlhf run`` also sends its record as an event line (``rlhf.console.progress``) for the
parent's table.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from rlhf.console.progress import emit_event, events_enabled, format_duration


@dataclass(frozen=True)
class Headline:
    """A metric shown in a stage's summary: ``label value`` or ``label start -> value``."""

    label: str
    key: str
    start_key: str | None = None
    fmt: str = ".3f"  # a format spec: ".1%" for rates, ".0f" for counts

    def render(self, metrics: dict[str, float]) -> str | None:
        value = _lookup(metrics, self.key)
        if value is None:
            return None
        text = format(value, self.fmt)
        start = _lookup(metrics, self.start_key) if self.start_key else None
        if start is not None:
            text = f"{format(start, self.fmt)} -> {text}"
        return f"{self.label} {text}"


def _lookup(metrics: dict[str, float], key: str) -> float | None:
    """``key`` as the stage returned it, or with "/" as "." (KFP's Metrics names)."""
    for k in (key, key.replace("/", ".")):
        value = _finite(metrics.get(k))
        if value is not None:
            return value
    return None


def _finite(v: Any) -> float | None:
    """``v`` as a float, or None when it is missing, not a number, NaN or infinite."""
    try:
        value = float(v)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def render_headlines(headlines: tuple[Headline, ...], metrics: dict[str, float]) -> str:
    """The headline metrics a stage reported, as ``label value, label start -> value``."""
    return ", ".join(t for h in headlines if (t := h.render(metrics)) is not None)


def start_line(stage: str, title: str = "") -> str:
    return f"==> {stage}: {title}" if title else f"==> {stage}"


def summary_line(stage: str, seconds: float, result: str) -> str:
    return f"<== {stage} done in {format_duration(seconds)}" + (f": {result}" if result else "")


@dataclass
class StageRecord:
    stage: str
    seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    failed: bool = False
    result: str = ""  # the headline metrics, rendered when the stage ended


@contextlib.contextmanager
def reporting(
    stage: str, title: str = "", headlines: tuple[Headline, ...] = ()
) -> Iterator[StageRecord]:
    """Print the start line, run the body (which sets ``record.metrics``), then the summary
    line with the ``headlines`` it reported (or, when the body raises, a line saying it
    failed; the traceback follows as usual)."""
    out = sys.stderr
    print(start_line(stage, title), file=out, flush=True)
    record = StageRecord(stage)
    started = time.time()
    try:
        yield record
    except BaseException:
        record.seconds, record.failed = time.time() - started, True
        print(f"<== {stage} FAILED after {format_duration(record.seconds)}", file=out, flush=True)
        _send(record)
        raise
    record.seconds = time.time() - started
    record.result = render_headlines(headlines, record.metrics)
    print(summary_line(stage, record.seconds, record.result), file=out, flush=True)
    _send(record)


def _send(record: StageRecord) -> None:
    if events_enabled():
        emit_event(
            "stage", stage=record.stage, seconds=record.seconds, failed=record.failed,
            result=record.result, metrics={k: f for k, v in record.metrics.items() if (f := _finite(v)) is not None},
        )  # fmt: skip


def summary_table(records: list[StageRecord]) -> str:
    """A table of stages: name, wall time, headline metrics."""
    rows = [
        (
            r.stage,
            format_duration(r.seconds),
            "FAILED" if r.failed else r.result,
        )
        for r in records
    ]
    rows.insert(0, ("stage", "time", "result"))
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    lines = [f"{a:<{widths[0]}}  {b:>{widths[1]}}  {c}".rstrip() for a, b, c in rows]
    lines.insert(1, f"{'-' * widths[0]}  {'-' * widths[1]}  {'-' * 6}")
    return "\n".join(lines)


def record_from_event(event: dict[str, Any]) -> StageRecord:
    return StageRecord(
        str(event.get("stage", "?")),
        float(event.get("seconds", 0.0)),
        dict(event.get("metrics") or {}),
        bool(event.get("failed", False)),
        str(event.get("result", "")),
    )
