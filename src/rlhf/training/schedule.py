"""Learning-rate schedule: linear warmup, then cosine decay to a floor."""

from __future__ import annotations

import math


def warmup_cosine(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """LR multiplier at optimizer step ``step`` (0-based) of ``total``.

    0 -> 1 linearly over ``warmup`` steps, then cosine from 1 down to ``min_ratio`` at
    ``total``. Warmup keeps Adam's early, badly estimated moments from taking large steps."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
