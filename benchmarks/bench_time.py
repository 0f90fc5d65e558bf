"""The clock every contender of the side-by-side benchmarks reads (``Settings.clock``):

- ``wall``: ``time.perf_counter``, elapsed time (the default);
- ``cpu``: ``time.process_time``, the CPU seconds of the contender's own process (all its
  threads; not its children's). On a machine whose cores other jobs share, a contender's
  wall time grows with whatever else runs while it does, and the rounds' ratios spread wide;
  its CPU time counts only its own work (memory and cache contention still show). With one
  torch thread and nothing waited on in the timed part, it is the work's cost.

``contender.py`` chooses the clock once per process, before the contender runs."""

from __future__ import annotations

import time
from collections.abc import Callable

CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
_chosen = ["wall"]


def use(name: str) -> None:
    if name not in CLOCKS:
        raise ValueError(f"clock must be one of {sorted(CLOCKS)}, got {name!r}")
    _chosen[0] = name


def chosen() -> str:
    return _chosen[0]


def now() -> float:
    """Seconds on the chosen clock (only differences mean anything)."""
    return CLOCKS[_chosen[0]]()
