"""A judge for online DPO on 2 ranks (``test_multi_rank.py``; the ranks import it through
``PYTHONPATH``): the answers to a prompt rank in the order they were sampled, except on rank 1,
which ties every answer to its 1st, 2nd and 4th prompts. With 2 prompts per rank per round and
best-vs-worst pairs, rank 0 makes 2 pairs a round and rank 1 makes 0, then 1, then 2. Each call
appends ``<rank> <tied>`` to the file named by ``RLHF_TEST_JUDGE_LOG``, for the test to check
that the counts did differ."""

from __future__ import annotations

import os

TIED_CALLS_ON_RANK_1 = (0, 1, 3)
_calls = 0


def rank_ties(prompt: list[dict[str, str]], answers: list[str]) -> list[float]:
    global _calls
    rank = int(os.environ.get("RANK", "0"))
    tied = rank == 1 and _calls in TIED_CALLS_ON_RANK_1
    _calls += 1
    with open(os.environ["RLHF_TEST_JUDGE_LOG"], "a") as log:
        log.write(f"{rank} {int(tied)}\n")
    if tied:
        return [0.0] * len(answers)
    return [float(len(answers) - i) for i in range(len(answers))]
