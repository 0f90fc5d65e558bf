"""One line when a stage starts, one when it ends (its time and headline metrics), and the table
of every stage that ``rlhf run`` prints at the end.

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


_POLICY = (
    Headline("RM score", "score_mean", "score_start"),
    Headline("gold", "gold_mean", "gold_start"),
    Headline("KL", "kl_mean"),
)
# What each stage is, and the metrics its summary shows (in this order, those it reported).
STAGES: dict[str, tuple[str, tuple[Headline, ...]]] = {
    "prepare": (
        "validate, deduplicate and split the data",
        (
            Headline("sft rows", "sft/train_rows", fmt=".0f"),
            Headline("preference pairs", "preferences/train_rows", fmt=".0f"),
            Headline("prompts", "prompts/train_rows", fmt=".0f"),
            Headline("eval prompts", "eval_prompts/test_rows", fmt=".0f"),
            Headline("rejected", "total/rejected", fmt=".0f"),
        ),
    ),
    "sft": ("supervised fine-tuning", (Headline("val loss", "val_loss", "val_loss_start"),)),
    "reward": (
        "reward model on preference pairs",
        (
            Headline("val accuracy", "accuracy", fmt=".1%"),
            Headline("gold accuracy", "gold_accuracy", fmt=".1%"),
        ),
    ),
    "ppo": ("PPO against the reward model", _POLICY),
    "grpo": ("GRPO against the reward model", _POLICY),
    "dpo": (
        "DPO on preference pairs",
        (
            Headline("val accuracy", "rewards_accuracy", "accuracy_start", fmt=".1%"),
            Headline("gold accuracy", "rewards_gold_accuracy", fmt=".1%"),
            Headline("margin", "rewards_margin"),
        ),
    ),
    "evaluate": (
        "candidate against the reference on held-out prompts",
        (
            Headline("gold win rate", "win_rate_gold", fmt=".1%"),
            Headline("RM win rate", "win_rate_rm", fmt=".1%"),
            Headline("KL", "kl_candidate_reference"),
        ),
    ),
}


def headlines(stage: str, metrics: dict[str, float]) -> str:
    """The stage's headline metrics as ``label value, label start -> value``."""
    shown = []
    for h in STAGES.get(stage, ("", ()))[1]:
        text = h.render(metrics)
        if text is not None:
            shown.append(text)
    return ", ".join(shown)


def start_line(stage: str) -> str:
    title = STAGES.get(stage, ("",))[0]
    return f"==> {stage}: {title}" if title else f"==> {stage}"


def summary_line(stage: str, seconds: float, metrics: dict[str, float]) -> str:
    shown = headlines(stage, metrics)
    return f"<== {stage} done in {format_duration(seconds)}" + (f": {shown}" if shown else "")


@dataclass
class StageRecord:
    stage: str
    seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    failed: bool = False


@contextlib.contextmanager
def reporting(stage: str) -> Iterator[StageRecord]:
    """Print the start line, run the body (which sets ``record.metrics``), then the summary
    line (or, when the body raises, a line saying it failed; the traceback follows as usual)."""
    out = sys.stderr
    print(start_line(stage), file=out, flush=True)
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
    print(summary_line(stage, record.seconds, record.metrics), file=out, flush=True)
    _send(record)


def _send(record: StageRecord) -> None:
    if events_enabled():
        emit_event(
            "stage", stage=record.stage, seconds=record.seconds, failed=record.failed,
            metrics={k: f for k, v in record.metrics.items() if (f := _finite(v)) is not None},
        )  # fmt: skip


def summary_table(records: list[StageRecord]) -> str:
    """A table of stages: name, wall time, headline metrics."""
    rows = [
        (
            r.stage,
            format_duration(r.seconds),
            "FAILED" if r.failed else headlines(r.stage, r.metrics),
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
    )
