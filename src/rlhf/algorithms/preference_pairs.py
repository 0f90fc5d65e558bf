"""Preference pairs from scored samples (online DPO): which of a prompt's K scored answers are
paired as (chosen, rejected). A pure function on plain scores."""

from __future__ import annotations

import itertools
import math

import torch

from rlhf.config import PAIR_SELECTIONS


def select_pairs(scores: torch.Tensor, how: str) -> torch.Tensor:
    """(M, 2) row indices (chosen, rejected) into the group-major answers of ``scores``.

    Args:
        scores: (P, K) score of answer k to prompt p; answer (p, k) is row p * K + k.
        how: ``"best_worst"``: per prompt its best answer against its worst (the first of
            equal best or worst ones); ``"all"``: every two answers with different scores, the
            higher one chosen, in index order (i < j). Equal scores never make a pair, so a
            prompt whose answers all tie gives none.
    Returns:
        a long tensor of shape (M, 2), M = 0 when every prompt's answers tie.
    """
    if how not in PAIR_SELECTIONS:
        raise ValueError(f"pair selection must be one of {PAIR_SELECTIONS}, got {how!r}")
    if scores.dim() != 2:
        raise ValueError(f"scores must be (prompts, answers per prompt), got {tuple(scores.shape)}")
    rows = scores.tolist()
    bad = [(p, k) for p, row in enumerate(rows) for k, s in enumerate(row) if not math.isfinite(s)]
    if bad:
        raise ValueError(f"scores must be finite numbers; prompt {bad[0][0]}'s answer "
                         f"{bad[0][1]} scored {rows[bad[0][0]][bad[0][1]]}")  # fmt: skip
    pairs: list[tuple[int, int]] = []
    for p, row in enumerate(rows):
        base = p * len(row)
        if how == "best_worst":
            best = max(range(len(row)), key=row.__getitem__)
            worst = min(range(len(row)), key=row.__getitem__)
            if row[best] > row[worst]:
                pairs.append((base + best, base + worst))
            continue
        for i, j in itertools.combinations(range(len(row)), 2):
            if row[i] != row[j]:
                pairs.append((base + i, base + j) if row[i] > row[j] else (base + j, base + i))
    return torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)
