"""Online DPO's pairs from hand-written scores: best-vs-worst, all ranked pairs, ties skipped."""

import pytest
import torch

from rlhf.algorithms.preference_pairs import select_pairs

SCORES = torch.tensor(
    [
        [0.1, 0.9, 0.5, 0.9],  # prompt 0 (rows 0-3): best row 1 (first of two 0.9s), worst 0
        [2.0, 2.0, 2.0, 2.0],  # prompt 1 (rows 4-7): all tie, no pair
        [-1.0, 3.0, -1.0, 0.0],  # prompt 2 (rows 8-11): best 9, worst 8 (first of two -1s)
    ]
)


def test_best_vs_worst_one_pair_per_prompt_ties_skipped() -> None:
    assert select_pairs(SCORES, "best_worst").tolist() == [[1, 0], [9, 8]]


def test_all_ranked_pairs_in_index_order_ties_skipped() -> None:
    assert select_pairs(SCORES, "all").tolist() == [
        # prompt 0: (0,1) (0,2) (0,3) (1,2) [1 ties 3] (2,3)
        [1, 0], [2, 0], [3, 0], [1, 2], [3, 2],
        # prompt 2: (8,9) [8 ties 10] (8,11) (9,10) (9,11) (10,11)
        [9, 8], [11, 8], [9, 10], [9, 11], [11, 10],
    ]  # fmt: skip


def test_no_pairs_and_bad_input() -> None:
    assert select_pairs(torch.ones(2, 3), "all").shape == (0, 2)
    assert select_pairs(torch.ones(2, 3), "best_worst").dtype == torch.long
    with pytest.raises(ValueError, match="pair selection must be one of"):
        select_pairs(SCORES, "best")
    with pytest.raises(ValueError, match=r"prompt 1's answer 2 scored nan"):
        select_pairs(torch.tensor([[0.0, 1.0], [0.0, 1.0], [2.0, float("nan")]]).view(2, 3), "all")
    with pytest.raises(ValueError, match="scores must be"):
        select_pairs(torch.ones(6), "all")
