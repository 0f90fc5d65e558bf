"""Comparing models by the scores of their answers: win rates, per-sample match outcomes and
Elo ratings. Pure functions on plain numbers, used by the evaluation stage.

A *comparison* pairs answer i of model A with answer i of model B to the same prompt (same
prompt, same sample index); the higher score wins, equal scores are a tie worth 1/2 to each.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

ELO_K = 16.0  # the evaluation stage's K factor (see elo_ratings)
ELO_BASE = 1000.0  # every player's starting rating

Match = tuple[str, str, float]  # (player a, player b, a's score: 1 win, 0.5 tie, 0 loss)


def outcome(a: float, b: float) -> float:
    """Score of ``a`` against ``b``: 1.0 if a > b, 0.5 if a == b, 0.0 if a < b."""
    return 1.0 if a > b else 0.5 if a == b else 0.0


def outcomes(a_scores: Sequence[float], b_scores: Sequence[float]) -> list[float]:
    """Per-comparison scores of A against B.

    Args:
        a_scores, b_scores: (N,) scores of A's and B's answers; entry i of both answers the
            same prompt (sample i of each model).
    Returns:
        (N,) list of 1.0 / 0.5 / 0.0 (A wins / tie / B wins).
    """
    a, b = [float(x) for x in a_scores], [float(x) for x in b_scores]
    if len(a) != len(b):
        raise ValueError(f"{len(a)} scores for A but {len(b)} for B; compare like with like")
    return [outcome(x, y) for x, y in zip(a, b, strict=True)]


def win_rate(a_scores: Sequence[float], b_scores: Sequence[float]) -> float:
    """Share of comparisons A wins, ties counting 1/2: mean of ``outcomes(a, b)``.

    Args:
        a_scores, b_scores: (N,) paired scores (lists, tuples or 1-D tensors), N >= 1.
    Returns:
        a float in [0, 1]; ``win_rate(a, b) + win_rate(b, a) == 1``, and identical score
        lists give exactly 0.5.
    """
    results = outcomes(a_scores, b_scores)
    if not results:
        raise ValueError("win_rate needs at least one comparison")
    return sum(results) / len(results)


def expected_score(rating_a: float, rating_b: float) -> float:
    """Elo's expected score of A against B: 1 / (1 + 10 ** ((R_b - R_a) / 400))."""
    return 1.0 / (1.0 + 10.0 ** ((rating_b - rating_a) / 400.0))


def elo_ratings(
    matches: Sequence[Match], k: float = ELO_K, base: float = ELO_BASE
) -> dict[str, float]:
    """Sequential Elo ratings after playing ``matches`` in the given order.

    Every player starts at ``base``. For a match (a, b, s), with E = expected_score(R_a, R_b):
    R_a += k * (s - E) and R_b -= k * (s - E), so the sum of all ratings stays
    ``base * n_players``. A tie between equally rated players changes nothing.

    Elo is order-dependent (later matches weigh more), so callers must pass matches in a
    fixed, documented order to get reproducible ratings. With many matches each rating keeps
    fluctuating around its equilibrium with a standard deviation of about sqrt(45 * k) points
    (about 27 for k=16, so about 55 for the gap between two players): read smaller gaps as
    noise. The win rate of a pair is the steadier measure.

    Args:
        matches: (a, b, score of a) with score 1.0 (a won), 0.5 (tie) or 0.0 (b won); a != b.
        k: the update step (K factor).
        base: starting rating.
    Returns:
        {player: rating} for every player in ``matches``, in order of first appearance.
    """
    ratings: dict[str, float] = {}
    for a, b, score in matches:
        if a == b:
            raise ValueError(f"a player cannot play itself: {a!r}")
        if not 0.0 <= score <= 1.0:
            raise ValueError(f"match score must be in [0, 1], got {score!r}")
        ra, rb = ratings.setdefault(a, base), ratings.setdefault(b, base)
        delta = k * (score - expected_score(ra, rb))
        ratings[a] = ra + delta
        ratings[b] = rb - delta
    return ratings


def round_robin_matches(scores: Mapping[str, Sequence[float]]) -> list[Match]:
    """Every pairwise per-sample comparison between the players, in a fixed order.

    Args:
        scores: {player: (N,) scores}, entry i of every list answering the same prompt
            (prompt-major: all samples of prompt 0, then of prompt 1, ...). The mapping's
            order is the players' order.
    Returns:
        N * P * (P - 1) / 2 matches for P players: for each index i in order, every pair
        (a, b) with a before b in the mapping, scored with ``outcome``.
    """
    names = list(scores)
    values = {n: [float(x) for x in scores[n]] for n in names}
    lengths = {len(v) for v in values.values()}
    if len(lengths) > 1:
        raise ValueError(f"every player needs the same number of scores, got {sorted(lengths)}")
    n = lengths.pop() if lengths else 0
    return [
        (a, b, outcome(values[a][i], values[b][i]))
        for i in range(n)
        for a, b in itertools.combinations(names, 2)
    ]
