"""Progress of a long loop: one ``Progress`` per loop, ``update()`` once per step.

How it shows depends on where the output goes:

- ``bar``: a live tqdm bar with steps done/total, rate and ETA (a terminal);
- ``plain``: a line every ``interval`` seconds and one at the end, with done/total, rate and
  ETA (a pod, CI, a pipe, where a bar's carriage returns would become hundreds of lines);
- ``quiet``: nothing, on every rank but rank 0 of a run that torchrun started (``RANK``);
- ``events``: under ``rlhf run`` each stage runs in a kfp.local subprocess whose output is a
  pipe even when the user's is a terminal. The parent decides for its tasks (``RLHF_PROGRESS``)
  and, when it has a terminal, reads their progress as event lines (``RLHF_CONSOLE_EVENTS``)
  and draws the bars itself (``rlhf.console.kfp_output``).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any, TextIO

PROGRESS_ENV = "RLHF_PROGRESS"  # "bar" or "plain"; unset: a bar when the stream is a terminal
EVENTS_ENV = "RLHF_CONSOLE_EVENTS"  # "1": a parent process reads this output (rlhf run)
EVENT_PREFIX = "::rlhf-console::"  # an event line: this prefix, then one JSON object
PLAIN_INTERVAL_S = 30.0  # seconds between plain progress lines
EVENT_INTERVAL_S = 0.2  # seconds between progress events (the parent's bar refresh)


def progress_mode(stream: TextIO) -> str:
    """ "quiet" on a rank other than 0; else ``RLHF_PROGRESS`` when set, else "bar" on a
    terminal and "plain" elsewhere."""
    if os.environ.get("RANK", "0") != "0":
        return "quiet"
    chosen = os.environ.get(PROGRESS_ENV, "")
    if chosen in ("bar", "plain"):
        return chosen
    isatty = getattr(stream, "isatty", None)
    return "bar" if isatty is not None and isatty() else "plain"


def events_enabled() -> bool:
    return os.environ.get(EVENTS_ENV) == "1"


def emit_event(kind: str, stream: TextIO | None = None, **fields: Any) -> None:
    """One event line for the parent process (flushed: the parent draws as they come)."""
    stream = stream or sys.stderr
    stream.write(EVENT_PREFIX + json.dumps({"kind": kind, **fields}) + "\n")
    stream.flush()


def parse_event(line: str) -> dict[str, Any] | None:
    """The event of an event line (leading spaces allowed), None for any other line."""
    text = line.strip()
    if not text.startswith(EVENT_PREFIX):
        return None
    try:
        event = json.loads(text[len(EVENT_PREFIX) :])
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def format_duration(seconds: float) -> str:
    """``8s``, ``1m 05s``, ``2h 03m``."""
    if not math.isfinite(seconds):
        return "?"
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m {s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m"


def _columns(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 0


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


class Progress:
    """Progress of one loop of ``total`` steps (``unit``: "step", "iteration", "batch").

    ``initial`` is where a resumed loop starts. ``update(n, **postfix)`` after each step; the
    postfix values (a loss, a score) show beside the counts. Use as a context manager, or call
    ``close()``. ``mode`` forces "bar", "plain" or "events" (the default: see the module)."""

    def __init__(
        self,
        desc: str,
        total: int,
        unit: str = "step",
        initial: int = 0,
        *,
        stream: TextIO | None = None,
        mode: str | None = None,
        interval: float = PLAIN_INTERVAL_S,
    ) -> None:
        self.desc, self.total, self.unit, self.initial = desc, int(total), unit, int(initial)
        self.n = self.initial
        self.postfix: dict[str, str] = {}
        self.stream = stream or sys.stderr
        if mode is None:
            mode = progress_mode(self.stream)
            if mode == "bar" and events_enabled():
                mode = "events"
        self.mode = mode
        self.interval = interval
        self._started = self._last = time.monotonic()
        self._shown = self.n  # the count the last plain line or event showed
        self._bar: Any = None
        if mode == "bar":
            from tqdm import tqdm

            # A terminal that reports 0 columns (a bare pty) would get an empty bar.
            width = (
                {"dynamic_ncols": True}
                if _columns(self.stream) > 0
                else {"ncols": 100, "nrows": 24}
            )
            self._bar = tqdm(
                total=self.total, desc=desc, unit=unit, initial=self.initial, file=self.stream,
                leave=True, **width,
            )  # fmt: skip
        elif mode == "events":
            emit_event(
                "start", self.stream, desc=desc, total=self.total, unit=unit, initial=self.initial
            )
        elif mode not in ("plain", "quiet"):
            raise ValueError(
                f"progress mode must be 'bar', 'plain', 'events' or 'quiet', got {mode!r}"
            )

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1, **postfix: Any) -> None:
        self.n += n
        if postfix:
            self.postfix.update({k: _value(v) for k, v in postfix.items()})
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix(self.postfix, refresh=False)
            self._bar.update(n)
            return
        now = time.monotonic()
        interval = EVENT_INTERVAL_S if self.mode == "events" else self.interval
        if now - self._last >= interval or self.n >= self.total:
            self._show()
            self._last = now

    def set(self, n: int, postfix: dict[str, str] | None = None) -> None:
        """Jump to count ``n`` (the parent process mirroring a task's events)."""
        self.update(n - self.n, **(postfix or {}))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            return
        if self.n != self._shown:
            self._show()
        if self.mode == "events":
            emit_event("end", self.stream)
        self.mode = "closed"

    def line(self) -> str:
        """The plain progress line: done/total, rate, ETA (or time taken when done)."""
        elapsed = time.monotonic() - self._started
        done = self.n - self.initial
        rate = done / elapsed if elapsed > 0 and done > 0 else 0.0
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total > 0 else ""
        parts = [f"{self.desc}: {self.n}/{self.total} {self.unit}s{pct}"]
        if rate >= 1:
            parts.append(f"{rate:.2f} {self.unit}s/s")
        elif rate > 0:
            parts.append(f"{1 / rate:.1f}s/{self.unit}")
        if self.n >= self.total:
            parts.append(f"took {format_duration(elapsed)}")
        elif rate > 0:
            parts.append(f"ETA {format_duration((self.total - self.n) / rate)}")
        parts += [f"{k} {v}" for k, v in self.postfix.items()]
        return ", ".join(parts)

    def _show(self) -> None:
        self._shown = self.n
        if self.mode in ("quiet", "closed"):
            return
        if self.mode == "events":
            emit_event("update", self.stream, n=self.n, postfix=self.postfix)
        else:
            self.stream.write(self.line() + "\n")
            self.stream.flush()
