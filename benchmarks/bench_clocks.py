"""How the side-by-side benchmarks time each contender, the same way for all: the first
optimizer step (supervised) or iteration (RL) is a warm-up, and the timed part runs from its
end to the end of the last one. The project's stages say when a step ends by logging its
metrics (``IterationClock``, a tracker, with ``log_every=1``); TRL's trainers by their
callbacks (``TrainerCallback``); the bare loops note the time themselves."""

from __future__ import annotations

from typing import Any

from bench_time import now
from ppo_episodes import IterationClock
from transformers import TrainerCallback

__all__ = ["IterationClock", "StepTimes", "window"]


class StepTimes(TrainerCallback):
    """When each optimizer step of a ``transformers.Trainer`` ends, and what it logged."""

    def __init__(self) -> None:
        self.times: dict[int, float] = {}
        self.logs: list[dict[str, Any]] = []

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.times[state.global_step] = now()

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
        self.logs.append(dict(logs or {}))


def window(times: dict[int, float], first: int, last: int) -> float:
    """Seconds from the end of step ``first`` to the end of step ``last``."""
    missing = [s for s in (first, last) if s not in times]
    if missing:
        raise RuntimeError(f"no time noted for step(s) {missing}; noted: {sorted(times)}")
    return times[last] - times[first]
