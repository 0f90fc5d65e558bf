"""Win rates, match outcomes and Elo ratings on hand-worked numbers."""

import math

import pytest
import torch

from rlhf.algorithms.ranking import (
    ELO_K,
    elo_ratings,
    expected_score,
    outcomes,
    round_robin_matches,
    win_rate,
)


def test_win_rate_counts_ties_as_half():
    # A wins, tie, B wins, A wins -> (1 + 0.5 + 0 + 1) / 4
    assert win_rate([2.0, 1.0, 0.0, 5.0], [1.0, 1.0, 3.0, -1.0]) == pytest.approx(0.625)
    assert outcomes([2.0, 1.0, 0.0], [1.0, 1.0, 3.0]) == [1.0, 0.5, 0.0]


def test_win_rate_of_identical_scores_is_exactly_half():
    scores = [0.3, -1.2, 0.3, 7.0]
    assert win_rate(scores, scores) == 0.5


def test_win_rate_is_complementary_and_takes_tensors():
    a, b = torch.tensor([0.1, 0.9, 0.5]), torch.tensor([0.2, 0.3, 0.5])
    assert win_rate(a, b) == pytest.approx(0.5)  # loss, win, tie
    assert win_rate(a, b) + win_rate(b, a) == pytest.approx(1.0)
    assert win_rate([1.0, 2.0], [0.0, 0.0]) == 1.0


def test_win_rate_rejects_unpaired_or_empty_scores():
    with pytest.raises(ValueError, match="3 scores for A but 2"):
        win_rate([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least one"):
        win_rate([], [])


def test_expected_score():
    assert expected_score(1000, 1000) == 0.5
    # 400 points ahead: 10:1 odds
    assert expected_score(1400, 1000) == pytest.approx(10 / 11)
    assert expected_score(1000, 1400) == pytest.approx(1 / 11)


def test_elo_one_match_k32():
    assert elo_ratings([("A", "B", 1.0)], k=32) == {"A": 1016.0, "B": 984.0}
    assert elo_ratings([("A", "B", 0.0)], k=32) == {"A": 984.0, "B": 1016.0}


def test_elo_tie_between_equals_changes_nothing():
    assert elo_ratings([("A", "B", 0.5)] * 5, k=32) == {"A": 1000.0, "B": 1000.0}


def test_elo_two_matches_by_hand():
    # After A beats B: A 1016, B 984. Then B beats A: E_B = 1 / (1 + 10^(32/400)).
    e_b = 1 / (1 + 10 ** (32 / 400))  # 0.454...
    ratings = elo_ratings([("A", "B", 1.0), ("B", "A", 1.0)], k=32)
    assert ratings["B"] == pytest.approx(984 + 32 * (1 - e_b))
    assert ratings["A"] == pytest.approx(1016 - 32 * (1 - e_b))
    assert ratings["A"] == pytest.approx(1000 - 32 * (0.5 - e_b))  # ~998.53: not back to 1000


def test_elo_depends_on_order_and_keeps_the_sum():
    matches = [("A", "B", 1.0), ("B", "C", 1.0), ("A", "C", 0.5), ("C", "A", 0.0)]
    forward, backward = elo_ratings(matches), elo_ratings(matches[::-1])
    assert forward != backward  # sequential Elo: order matters, so callers fix it
    for ratings in (forward, backward):
        assert math.fsum(ratings.values()) == pytest.approx(3000.0)
    assert list(forward) == ["A", "B", "C"]  # players in order of first appearance
    assert forward["A"] > forward["B"] and forward["A"] > forward["C"]
    assert ELO_K == 16.0


def test_elo_base_and_validation():
    assert elo_ratings([("A", "B", 1.0)], k=10, base=1500) == {"A": 1505.0, "B": 1495.0}
    assert elo_ratings([]) == {}
    with pytest.raises(ValueError, match="itself"):
        elo_ratings([("A", "A", 1.0)])
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        elo_ratings([("A", "B", 2.0)])


def test_round_robin_matches_order():
    scores = {"x": [1.0, 0.0], "y": [0.0, 0.0], "z": [2.0, -1.0]}
    assert round_robin_matches(scores) == [
        ("x", "y", 1.0),
        ("x", "z", 0.0),
        ("y", "z", 0.0),
        ("x", "y", 0.5),
        ("x", "z", 1.0),
        ("y", "z", 1.0),
    ]
    with pytest.raises(ValueError, match="same number"):
        round_robin_matches({"x": [1.0], "y": [1.0, 2.0]})
