"""Wall-clock seconds of work queued on a device: GPU kernels run asynchronously, so a clock read
right after launching them would miss their time."""

from __future__ import annotations

import time

import torch


def seconds_since(started: float, device: torch.device) -> float:
    """Seconds since ``started`` (a ``time.perf_counter()`` reading), once the work queued on
    ``device`` is done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started
