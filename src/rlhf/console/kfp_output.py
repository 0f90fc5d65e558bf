"""kfp.local's own output quieted for ``rlhf run``, and the tasks' progress drawn on the user's
terminal.

What prints what during a local run, and what happens to it unless ``--verbose``:

- kfp.local's orchestrator logs, through the root logger at INFO, each task's start, a
  "Streamed logs:" header, its status and every output artifact with its metadata: a filter
  on the root logger drops INFO records logged from kfp/local (warnings and errors pass).
- It warns for every task that display names and a non-Python base image (ours: a container
  image) mean nothing locally: those two warnings are ignored by their message.
- It prints a task's output lines indented by 4 spaces, a blank line after them and a
  horizontal rule after each task: the stdout filter below un-indents and drops those.
- In the task, kfp's executor logs ``[KFP Executor ...] INFO`` records before our code runs,
  one of them the whole executor input as JSON: the filter drops those records, the JSON with
  its record. (Our code then sets the task's root logger to WARNING: ``log_setup``.)
- Event lines from the tasks (``rlhf.console.progress``) never show: progress events become a
  live bar here when the user's stdout is a terminal (a task's own output is a pipe), and
  stage records are kept for the summary table.

Everything else, a task's traceback included, passes unchanged.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import time
import warnings
from collections.abc import Iterator
from typing import Any, TextIO

from rlhf.console.progress import (
    EVENTS_ENV,
    PROGRESS_ENV,
    Progress,
    parse_event,
    progress_mode,
)
from rlhf.console.stage_report import StageRecord, record_from_event
from rlhf.log_setup import VERBOSE_ENV

_EXECUTOR_INFO = re.compile(r"\[KFP Executor [^\]]* (DEBUG|INFO)\]: ")
_RULE = re.compile(r"-{20,}")
_TASK_INDENT = " " * 4  # kfp.local's logging_utils.indented_print
# kfp.local's per-task warnings that say nothing to the user of `rlhf run`.
_KFP_LOCAL_WARNINGS = (
    (UserWarning, r"Task '.*': settings .* have no effect in the current local runner"),
    (RuntimeWarning, r"You may be attemping to run a task that uses custom or non-Python"),
)


class TaskOutput(io.TextIOBase):
    """Stands in for ``sys.stdout`` during a local run: filters kfp.local's lines (above),
    draws the tasks' progress events as bars on ``out`` (when ``bars``) and collects their
    stage records, with each task's wall time."""

    def __init__(self, out: TextIO, verbose: bool, bars: bool) -> None:
        super().__init__()
        self.out, self.verbose, self.bars = out, verbose, bars
        self.records: list[StageRecord] = []
        self._pending = ""
        self._in_executor_input = False
        self._bar: Progress | None = None
        self._since = time.monotonic()

    # --- the stream --------------------------------------------------------------------
    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._pending += text
        while "\n" in self._pending:
            line, self._pending = self._pending.split("\n", 1)
            self._line(line)
        return len(text)

    def flush(self) -> None:
        self.out.flush()

    def isatty(self) -> bool:
        return self.out.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.out, "encoding", "utf-8")

    def finish(self) -> None:
        if self._pending:
            self._line(self._pending)
            self._pending = ""
        self._close_bar()

    # --- lines -------------------------------------------------------------------------
    def _line(self, line: str) -> None:
        event = parse_event(line)
        if event is not None:
            self._event(event)
            return
        if self.verbose:
            self._print(line)
            return
        text = line.removeprefix(_TASK_INDENT)
        if self._in_executor_input:  # json.dumps(indent=4) closes with "}" at column 0
            self._in_executor_input = text != "}"
            return
        if _EXECUTOR_INFO.match(text):
            self._in_executor_input = text.endswith("Got executor_input:")
            return
        if not text.strip() or _RULE.fullmatch(text):
            return
        self._print(text)

    def _print(self, text: str) -> None:
        if self._bar is not None:
            from tqdm import tqdm

            tqdm.write(text, file=self.out)  # above the bar, which is redrawn
        else:
            self.out.write(text + "\n")
            self.out.flush()

    def _event(self, event: dict[str, Any]) -> None:
        kind = event.get("kind")
        if kind == "stage":
            # Tasks run one after another: a task's wall time, its process start-up included,
            # is the time since the previous one ended.
            record = record_from_event(event)
            now = time.monotonic()
            record.seconds, self._since = now - self._since, now
            self.records.append(record)
        elif kind == "start" and self.bars:
            self._close_bar()
            self._bar = Progress(
                str(event.get("desc", "")), int(event.get("total", 0)),
                str(event.get("unit", "step")), int(event.get("initial", 0)),
                stream=self.out, mode="bar",
            )  # fmt: skip
        elif kind == "update" and self._bar is not None:
            self._bar.set(int(event.get("n", 0)), event.get("postfix") or None)
        elif kind == "end":
            self._close_bar()

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class _KfpLocalInfo(logging.Filter):
    """Drops the INFO records kfp.local's orchestrator logs on the root logger."""

    def __init__(self) -> None:
        super().__init__()
        import kfp.local

        self.folder = os.path.dirname(kfp.local.__file__) + os.sep

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.pathname.startswith(self.folder)


@contextlib.contextmanager
def local_run_console(verbose: bool = False) -> Iterator[TaskOutput]:
    """For the duration of a kfp.local run: tell the tasks how to show progress (from this
    process's stdout: a terminal gets bars) and to send events, and filter the output (above).
    Yields the ``TaskOutput`` whose ``records`` are the finished stages."""
    real = sys.stdout
    bars = progress_mode(real) == "bar"
    env = {PROGRESS_ENV: "bar" if bars else "plain", EVENTS_ENV: "1", VERBOSE_ENV: "1" * verbose}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    output = TaskOutput(real, verbose, bars)
    root = logging.getLogger()
    kfp_info = _KfpLocalInfo()
    with warnings.catch_warnings():
        if not verbose:
            for category, message in _KFP_LOCAL_WARNINGS:
                warnings.filterwarnings("ignore", message=message, category=category)
            root.addFilter(kfp_info)
        sys.stdout = output
        try:
            yield output
        finally:
            output.finish()
            sys.stdout = real
            root.removeFilter(kfp_info)
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
