"""Learning-rate schedules: linear warmup, then cosine decay to a floor (the supervised
stages) or a constant or linear decay to 0 (the on-policy stages)."""

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


def warmup_then(step: int, total: int, warmup: int, decay: str) -> float:
    """LR multiplier at iteration ``step`` (0-based) of ``total``: 0 -> 1 linearly over
    ``warmup`` iterations, times 1 (``decay="constant"``) or ``1 - step / total``
    (``"linear"``, CleanRL's anneal_lr: the last iteration takes 1/total of the peak)."""
    factor = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
    if decay == "linear":
        factor *= 1.0 - step / total
    elif decay != "constant":
        raise ValueError(f"LR decay must be 'constant' or 'linear', got {decay!r}")
    return factor
