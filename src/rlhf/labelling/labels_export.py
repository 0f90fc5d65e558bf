"""``rlhf label export``: the rankings in the database as a feedback export (export.py).

Each ranking gives its K(K-1)/2 pairs with score margins and the labeller's agreement with the
others; labellers below ``min_agreement`` (with the others or with gold) are left out, and the
manifest says who and why. Exclusion is all or nothing: weighting pairs by agreement would need
a weight column that ``rlhf prepare`` does not read.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rlhf.data.errors import EmptyInput
from rlhf.labelling.export import Pair, ranking_pairs, write_export
from rlhf.labelling.quality import Labels, exclusions, report


@dataclass(frozen=True)
class Exported:
    destination: str
    pairs: int
    rankings: int
    excluded: dict[str, str]


def export_labels(labels: Labels, destination: str, min_agreement: float | None) -> Exported:
    """Publish the pairs of every ranking by a labeller not excluded, complete or not at all."""
    if min_agreement is not None and not 0 <= min_agreement <= 1:
        raise ValueError(f"--min-agreement must be between 0 and 1, got {min_agreement}")
    quality = report(labels)
    excluded = exclusions(quality, min_agreement)
    rate = {p["name"]: p["agreement_with_others"]["rate"] for p in quality["labellers"]}
    kept = [r for r in labels.rankings if r.labeller not in excluded]
    if not kept:
        why = f" (excluded: {excluded})" if excluded else ""
        raise EmptyInput(destination, f"no ranking to export{why}")
    counted = {"pairs": 0}

    def pairs() -> Iterator[Pair]:
        for r in kept:
            ranks = {cid: i + 1 for i, cid in enumerate(r.order)}
            for pair in ranking_pairs(
                labels.tasks[r.task_key], r.labeller, ranks, r.scores, rate.get(r.labeller)
            ):
                counted["pairs"] += 1
                yield pair

    fields: dict[str, Any] = {
        "source": "rlhf label export",
        "min_agreement": min_agreement,
        "excluded_labellers": excluded,
        "rankings": len(kept),
        "pair_agreement": quality["pair_agreement"],
        "krippendorff_alpha": quality["krippendorff_alpha"],
        "weighting": "none: labellers below min_agreement are excluded, the rest weigh alike",
    }
    write_export(pairs(), destination, fields)
    return Exported(destination, counted["pairs"], len(kept), excluded)
