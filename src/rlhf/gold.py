"""Programmatic rewards named by import path, e.g. ``rlhf.data.demo_task:gold_reward``."""

from __future__ import annotations

import importlib
from collections.abc import Callable

GoldReward = Callable[..., float]


def load_reward_function(path: str) -> GoldReward:
    """Import ``module:function``; the function takes (prompt, response) and returns a float."""
    module, sep, name = path.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"reward function must be 'module:function', got {path!r}")
    fn = getattr(importlib.import_module(module), name, None)
    if not callable(fn):
        raise ValueError(f"{path}: {name!r} is not a function in {module}")
    return fn


def gold_order(gold: GoldReward | None, prompt: object, chosen: str, rejected: str) -> int:
    """+1 when ``gold`` prefers the chosen answer, -1 the rejected one, 0 for a tie or no
    gold reward."""
    if gold is None:
        return 0
    diff = gold(prompt, chosen) - gold(prompt, rejected)
    return (diff > 0) - (diff < 0)
