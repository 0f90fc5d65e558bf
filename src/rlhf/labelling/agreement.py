"""Agreement between labellers: pure functions over rankings.

A ranking maps each candidate id to its rank (1 is best; equal ranks are ties). Two rankings
*agree on a pair* of candidates when they order it the same way (both tie it, or both put the
same one first). Measures:

* :func:`pair_agreement`: of the candidate pairs both rankings cover, how many they agree on;
  InstructGPT reports about 73% between its labellers.
* :func:`agreement_with_others`: per labeller, summed over each task they share with another
  labeller and each such other labeller.
* :func:`agreement_with_gold`: per labeller, against the known order of gold tasks.
* :func:`krippendorff_alpha`: chance-corrected agreement (Krippendorff 2011, "Computing
  Krippendorff's Alpha-Reliability"), from the coincidence matrix of values within units, with
  the nominal, interval or ordinal difference; :func:`ranking_alpha` makes each (task,
  candidate) a unit and its ranks the values (ordinal). 1 is perfect agreement, 0 chance.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

Ranks = Mapping[str, int]
# task -> labeller -> ranks
Labels = Mapping[str, Mapping[str, Ranks]]


@dataclass(frozen=True)
class Agreement:
    agreed: int = 0
    pairs: int = 0

    @property
    def rate(self) -> float | None:
        return self.agreed / self.pairs if self.pairs else None

    def __add__(self, other: Agreement) -> Agreement:
        return Agreement(self.agreed + other.agreed, self.pairs + other.pairs)


def ranks_of(order: Sequence[str]) -> dict[str, int]:
    """Ranks from candidate ids listed best first."""
    return {cid: i + 1 for i, cid in enumerate(order)}


def _sign(x: int) -> int:
    return (x > 0) - (x < 0)


def pair_agreement(a: Ranks, b: Ranks) -> Agreement:
    """How many of the candidate pairs ranked by both ``a`` and ``b`` they order alike."""
    shared = sorted(set(a) & set(b))
    agreed = pairs = 0
    for x, y in combinations(shared, 2):
        pairs += 1
        agreed += _sign(a[x] - a[y]) == _sign(b[x] - b[y])
    return Agreement(agreed, pairs)


def overall_agreement(labels: Labels) -> Agreement:
    """Pair agreement over every task and every two labellers of it."""
    total = Agreement()
    for by_labeller in labels.values():
        for x, y in combinations(sorted(by_labeller), 2):
            total += pair_agreement(by_labeller[x], by_labeller[y])
    return total


def agreement_with_others(labels: Labels) -> dict[str, Agreement]:
    """Each labeller's pair agreement with every other labeller of the tasks they share."""
    per: dict[str, Agreement] = defaultdict(Agreement)
    for by_labeller in labels.values():
        for x, y in combinations(sorted(by_labeller), 2):
            found = pair_agreement(by_labeller[x], by_labeller[y])
            per[x] += found
            per[y] += found
    return dict(per)


def agreement_with_gold(labels: Labels, gold: Mapping[str, Ranks]) -> dict[str, Agreement]:
    """Each labeller's pair agreement with the known order of the gold tasks they ranked."""
    per: dict[str, Agreement] = defaultdict(Agreement)
    for task, order in gold.items():
        for labeller, ranks in labels.get(task, {}).items():
            per[labeller] += pair_agreement(ranks, order)
    return dict(per)


def _nominal(c: float, k: float, _n: Mapping[float, float]) -> float:
    return float(c != k)


def _interval(c: float, k: float, _n: Mapping[float, float]) -> float:
    return float(c - k) ** 2


def _ordinal(c: float, k: float, n: Mapping[float, float]) -> float:
    lo, hi = min(c, k), max(c, k)
    between = sum(count for value, count in n.items() if lo <= value <= hi)
    return (between - (n[c] + n[k]) / 2) ** 2


METRICS: dict[str, Callable[[float, float, Mapping[float, float]], float]] = {
    "nominal": _nominal,
    "interval": _interval,
    "ordinal": _ordinal,
}


def krippendorff_alpha(units: Iterable[Sequence[float]], metric: str = "ordinal") -> float | None:
    """Krippendorff's alpha of ``units``, each the values its coders gave (missing ones left
    out). Units with fewer than two values are not pairable and count for nothing. None when
    undefined: fewer than two pairable values, or all of them equal (no expected
    disagreement)."""
    delta = METRICS[metric]
    coincidences: dict[tuple[float, float], float] = defaultdict(float)
    for values in units:
        m = len(values)
        if m < 2:
            continue
        for i, c in enumerate(values):
            for j, k in enumerate(values):
                if i != j:
                    coincidences[c, k] += 1 / (m - 1)
    n_c: dict[float, float] = defaultdict(float)
    for (c, _k), o in coincidences.items():
        n_c[c] += o
    n = sum(n_c.values())
    if n < 2:
        return None
    observed = sum(o * delta(c, k, n_c) for (c, k), o in coincidences.items())
    expected = sum(n_c[c] * n_c[k] * delta(c, k, n_c) for c in n_c for k in n_c) / (n - 1)
    if expected == 0:
        return None
    return 1 - observed / expected


def ranking_alpha(labels: Labels) -> float | None:
    """Ordinal Krippendorff's alpha over rankings: a unit per (task, candidate), the ranks the
    task's labellers gave it as values."""
    units = []
    for by_labeller in labels.values():
        candidates = sorted({c for ranks in by_labeller.values() for c in ranks})
        for c in candidates:
            units.append([ranks[c] for ranks in by_labeller.values() if c in ranks])
    return krippendorff_alpha(units, "ordinal")
