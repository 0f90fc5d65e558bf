"""Scheduled retraining: KFP recurring runs of a pipeline, and their cron expressions.

KFP's scheduler reads a cron expression with SIX fields, seconds first::

    second minute hour day-of-month month day-of-week
    0      0      3    *            *     *            -> every day at 03:00:00

not the five fields of crontab(5). A five-field expression would be read shifted by one field
(``0 3 * * *`` as "second 0 of minute 3 of every hour"), so it is rejected here with the
six-field form it most likely meant. Each retraining run goes through the pipeline's champion
gate, so a schedule only promotes a model that beats the current champion.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from rlhf.pipeline.submit import Prepared

CRON_FORMAT = (
    "KFP cron expressions have 6 fields, seconds first: "
    "'second minute hour day-of-month month day-of-week', e.g. '0 0 3 * * *' (daily at 03:00), "
    "'0 30 2 * * MON' (Mondays at 02:30), '0 0 */6 * * *' (every 6 hours)"
)
# Descriptors, written out in the six fields KFP documents.
DESCRIPTORS = {
    "@yearly": "0 0 0 1 1 *",
    "@annually": "0 0 0 1 1 *",
    "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 0",
    "@daily": "0 0 0 * * *",
    "@midnight": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
}
MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # names for low, low+1, ...
    question_mark: bool = False  # "?" (no specific value) is allowed


FIELDS = (
    _Field("second", 0, 59),
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day-of-month", 1, 31, question_mark=True),
    _Field("month", 1, 12, tuple(MONTHS)),
    _Field("day-of-week", 0, 6, tuple(DAYS), question_mark=True),
)


class CronError(ValueError):
    """A cron expression KFP would reject or misread; the message says why and the format."""


def _value(text: str, field: _Field, expr: str) -> int:
    upper = text.upper()
    if upper in field.names:
        return field.low + field.names.index(upper)
    if not text.isdigit():
        raise CronError(
            f"cron {expr!r}: {field.name} field: {text!r} is not a number. {CRON_FORMAT}"
        )
    value = int(text)
    if not field.low <= value <= field.high:
        raise CronError(
            f"cron {expr!r}: {field.name} {value} is out of range {field.low}-{field.high}. "
            f"{CRON_FORMAT}"
        )
    return value


def _check_field(text: str, field: _Field, expr: str) -> None:
    for item in text.split(","):
        base, slash, step = item.partition("/")
        if slash and (not step.isdigit() or int(step) == 0):
            raise CronError(f"cron {expr!r}: {field.name} step {step!r} must be a positive number")
        if base == "*" or (base == "?" and field.question_mark and not slash):
            continue
        low, dash, high = base.partition("-")
        start = _value(low, field, expr)
        if dash and _value(high, field, expr) < start:
            raise CronError(f"cron {expr!r}: {field.name} range {base!r} runs backwards")


def validate_cron(expr: str) -> str:
    """Return the six-field expression KFP should get (descriptors like ``@daily`` written out),
    or raise :class:`CronError` saying what is wrong and what the format is."""
    expr = expr.strip()
    if expr.startswith("@"):
        if expr.lower() in DESCRIPTORS:
            return DESCRIPTORS[expr.lower()]
        raise CronError(f"cron {expr!r}: unknown descriptor; known: {sorted(DESCRIPTORS)}")
    fields = expr.split()
    if len(fields) == 5:
        raise CronError(
            f"cron {expr!r} has 5 fields (crontab format); {CRON_FORMAT}. "
            f"Add the seconds in front: '0 {expr}'"
        )
    if len(fields) != 6:
        raise CronError(f"cron {expr!r} has {len(fields)} fields; {CRON_FORMAT}")
    for text, field in zip(fields, FIELDS, strict=True):
        _check_field(text, field, expr)
    return " ".join(fields)


_DURATION = re.compile(r"^(\d+)([smhd]?)$")


def parse_interval(text: str) -> int:
    """``"3600"``, ``"90m"``, ``"12h"``, ``"7d"`` -> seconds (KFP's periodic schedule)."""
    match = _DURATION.match(text.strip().lower())
    if not match or int(match.group(1)) == 0:
        raise ValueError(
            f"interval {text!r}: expected a positive number of seconds, or with a unit: "
            "'90m', '12h', '7d'"
        )
    return int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def create_schedule(
    client: Any,
    prepared: Prepared,
    name: str,
    cron: str | None = None,
    interval_second: int | None = None,
    max_concurrency: int = 1,
    no_catchup: bool = True,
    start_time: str | None = None,
    end_time: str | None = None,
    service_account: str = "",
) -> str:
    """Create an enabled recurring run of the prepared pipeline version; returns its id."""
    if (cron is None) == (interval_second is None):
        raise ValueError("give either a cron expression or an interval, not both or neither")
    if max_concurrency < 1:
        raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
    recurring = client.create_recurring_run(
        experiment_id=prepared.experiment_id,
        job_name=name,
        description=f"scheduled retraining: {prepared.uploaded.version_name}",
        start_time=start_time,
        end_time=end_time,
        cron_expression=validate_cron(cron) if cron is not None else None,
        interval_second=interval_second,
        max_concurrency=max_concurrency,
        no_catchup=no_catchup,
        params=prepared.parameters,
        pipeline_id=prepared.uploaded.pipeline_id,
        version_id=prepared.uploaded.version_id,
        enabled=True,
        service_account=service_account or None,
    )
    return recurring.recurring_run_id


@dataclass
class ScheduleInfo:
    recurring_run_id: str
    name: str
    status: str  # ENABLED / DISABLED
    trigger: str  # "cron 0 0 3 * * *" or "every 86400 s"
    max_concurrency: int
    no_catchup: bool


def _trigger(recurring: Any) -> str:
    trigger = recurring.trigger
    if trigger is not None and trigger.cron_schedule is not None:
        return f"cron {trigger.cron_schedule.cron}"
    if trigger is not None and trigger.periodic_schedule is not None:
        return f"every {trigger.periodic_schedule.interval_second} s"
    return "?"


def list_schedules(
    client: Any, experiment_id: str | None = None, namespace: str | None = None
) -> list[ScheduleInfo]:
    """Every recurring run (of one experiment when given), following the result pages."""
    out, token = [], ""
    while True:
        page = client.list_recurring_runs(
            page_token=token, page_size=100, experiment_id=experiment_id, namespace=namespace
        )
        for r in page.recurring_runs or []:
            out.append(
                ScheduleInfo(
                    r.recurring_run_id, r.display_name, str(r.status or r.mode or ""),
                    _trigger(r), int(r.max_concurrency or 0), bool(r.no_catchup),
                )
            )  # fmt: skip
        token = page.next_page_token or ""
        if not token:
            return out


def disable_schedule(client: Any, recurring_run_id: str) -> None:
    client.disable_recurring_run(recurring_run_id)


def delete_others(
    client: Any, name: str, keep: str, namespace: str | None = None
) -> list[ScheduleInfo]:
    """Delete every recurring run called ``name`` except ``keep`` (the one just created): what
    ``rlhf schedule create --replace`` does after creating, so a failed create leaves the
    earlier schedule running and a repeated install leaves one. Returns the deleted ones."""
    gone = [s for s in list_schedules(client, namespace=namespace)
            if s.name == name and s.recurring_run_id != keep]  # fmt: skip
    for s in gone:
        client.delete_recurring_run(s.recurring_run_id)
    return gone


def find_schedule(client: Any, key: str, namespace: str | None = None) -> ScheduleInfo:
    """A recurring run by id or by name (a name must be unique)."""
    schedules = list_schedules(client, namespace=namespace)
    by_id = [s for s in schedules if s.recurring_run_id == key]
    if by_id:
        return by_id[0]
    by_name = [s for s in schedules if s.name == key]
    if len(by_name) == 1:
        return by_name[0]
    if by_name:
        ids = ", ".join(s.recurring_run_id for s in by_name)
        raise ValueError(f"{len(by_name)} schedules are named {key!r} ({ids}): give the id")
    raise ValueError(f"no schedule with id or name {key!r}; `rlhf schedule list` shows them")
