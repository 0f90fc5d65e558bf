"""``rlhf judge``: label a batch with a judge and write the feedback export, with the judge's
agreement with human labels of the same tasks when some are given."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from rlhf.config import JudgeConfig
from rlhf.labelling.batch import read_tasks
from rlhf.labelling.export import write_export
from rlhf.labelling.judge_agreement import agreement, read_human_pairs
from rlhf.labelling.judges import judge_tasks, load_judge, parse_judge
from rlhf.labelling.pairwise_judge import PairwiseJudge

log = logging.getLogger("rlhf.labelling")


def run_judge(
    batch: str,
    destination: str,
    judge_spec: str,
    config: JudgeConfig,
    human: Sequence[str] = (),
) -> dict[str, Any]:
    """Judge every task of ``batch`` and publish the pairs at ``destination``; returns the
    summary the manifest also holds (``judge``, ``tasks``, ``pairs``, the LM judge's
    ``pairs_judged``/``ties``, and ``human_agreement`` when ``human`` exports are given).
    Every input is read and checked before the judge loads."""
    parse_judge(judge_spec)
    tasks = list(read_tasks(batch))
    human_pairs = [p for uri in human for p in read_human_pairs(uri)]
    judge = load_judge(judge_spec, config)
    pairs = list(judge_tasks(judge, tasks))
    summary: dict[str, Any] = {
        "judge": judge_spec,
        "labeller": judge.name,
        "batch": str(batch),
        "tasks_judged": len(tasks),
        "pairs": len(pairs),
    }
    if isinstance(judge, PairwiseJudge):
        summary |= {"pairs_judged": judge.judged, "ties": judge.ties}
        summary["judge_settings"] = {k: v for k, v in asdict(config).items() if k != "device"}
    if not pairs:  # rather than write_export's bare "no pair": say why
        raise ValueError(
            f"{judge.name} gave no preference pair on {len(tasks)} task(s)"
            + (f": all {judge.judged} pairs were ties (the two orders disagreed: a judge that "
               "prefers a position or a label, not an answer)"
               if isinstance(judge, PairwiseJudge) else ": every candidate scored the same")
        )  # fmt: skip
    if human:
        summary["human_exports"] = [str(u) for u in human]
        summary["human_agreement"] = agreement(pairs, human_pairs, (t.task_id for t in tasks))
    write_export(pairs, destination, summary)
    return summary
