"""SIGTERM for the tasks that drive a cluster object (a multi-node stage's TrainJob,
``trainjob.py``; the deploy stage's InferenceService, ``rollout.py``).

KFP cancels a run by deleting its pods: the kubelet sends SIGTERM, then SIGKILL after the
grace period (30 s by default). Such a task must clean up what it started in between: delete
its TrainJob, put the previous InferenceService back. :func:`sigterm_raises` turns the signal
into :class:`Terminated`, a ``BaseException`` that unwinds to the task's cleanup (no ``except
Exception`` on the way eats it); the task then exits with :data:`SIGTERM_EXIT`.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

SIGTERM_EXIT = 128 + signal.SIGTERM  # a process ended by SIGTERM exits with 143
CANCELLED = "the task was terminated (SIGTERM: the run was cancelled)"


class Terminated(BaseException):
    """SIGTERM, raised in the main thread."""


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block SIGTERM raises :class:`Terminated`; the previous handler is restored
    after it. Python handles signals in the main thread only; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def ignore_sigterm() -> None:
    """A second SIGTERM during the cleanup must not start a second cleanup."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
