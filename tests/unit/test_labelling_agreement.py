"""Agreement between labellers, checked against values worked out by hand and against the
published example of Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability"."""

import pytest

from rlhf.labelling.agreement import (
    Agreement,
    agreement_with_gold,
    agreement_with_others,
    krippendorff_alpha,
    overall_agreement,
    pair_agreement,
    ranking_alpha,
    ranks_of,
)
from rlhf.labelling.quality import exclusions

# Krippendorff (2011), section C: 4 observers, 12 units, values 1-5, None where an observer
# gave no value. Published: nominal 0.743, interval 0.849, ordinal 0.815.
A = [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None]
B = [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3]
C = [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None]
D = [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None]
UNITS = [[v for v in unit if v is not None] for unit in zip(A, B, C, D, strict=True)]


@pytest.mark.parametrize(
    "metric, published", [("nominal", 0.743), ("interval", 0.849), ("ordinal", 0.815)]
)
def test_alpha_matches_krippendorffs_worked_example(metric, published):
    assert krippendorff_alpha(UNITS, metric) == pytest.approx(published, abs=5e-4)


def test_ranking_alpha_and_pair_agreement_by_hand():
    # x: a > b > c; y: a > c > b. Units a (1,1), b (2,3), c (3,2): coincidences o11 = 2,
    # o23 = o32 = 2; n1 = n2 = n3 = 2, n = 6. Ordinal deltas: d12 = d23 = (4 - 2)^2 = 4,
    # d13 = (6 - 2)^2 = 16. Observed sum o*d = 2*4 + 2*4 = 16; expected sum n_c n_k d over c != k
    # = 2 * (4*4 + 4*4 + 4*16) = 192. alpha = 1 - (n - 1) * 16 / 192 = 1 - 80/192 = 7/12.
    labels = {"t": {"x": ranks_of("abc"), "y": ranks_of("acb")}}
    assert ranking_alpha(labels) == pytest.approx(7 / 12)
    # pairs ab, ac agree; bc does not
    assert overall_agreement(labels) == Agreement(2, 3)
    assert ranking_alpha({"t": {"x": ranks_of("abc"), "y": ranks_of("abc")}}) == 1.0
    # reversed: alpha = 1 - 5 * (o13 d13 + o31 d31) / 192 = 1 - 5 * 64 / 192 = -2/3
    assert ranking_alpha({"t": {"x": ranks_of("abc"), "y": ranks_of("cba")}}) == pytest.approx(
        -2 / 3
    )


def test_alpha_undefined_without_pairable_values_or_variation():
    assert krippendorff_alpha([[1], [2]]) is None  # no unit with two values
    assert krippendorff_alpha([[3, 3], [3, 3]]) is None  # no expected disagreement
    assert ranking_alpha({"t": {"x": ranks_of("ab")}}) is None


def test_pair_agreement_counts_ties_and_shared_candidates_only():
    assert pair_agreement({"a": 1, "b": 1, "c": 2}, {"a": 1, "b": 1, "c": 2}) == Agreement(3, 3)
    assert pair_agreement({"a": 1, "b": 1}, {"a": 1, "b": 2}) == Agreement(0, 1)
    assert pair_agreement({"a": 1, "b": 2, "z": 3}, {"a": 2, "b": 1}) == Agreement(0, 1)
    assert Agreement().rate is None


def test_each_labeller_against_the_others_and_gold():
    labels = {
        # t1: ann and bob agree fully (6/6); cat reverses both (0/6 each)
        "t1": {"ann": ranks_of("abcd"), "bob": ranks_of("abcd"), "cat": ranks_of("dcba")},
        # t2: ann and cat only: ab agrees, ac, bc do not -> 1/3
        "t2": {"ann": ranks_of("abc"), "cat": ranks_of("bca")},
        "g": {"ann": ranks_of("xy"), "cat": ranks_of("yx")},
    }
    others = agreement_with_others(labels)
    assert others["ann"] == Agreement(6 + 0 + 1 + 0, 6 + 6 + 3 + 1)
    assert others["bob"] == Agreement(6, 12)
    assert others["cat"] == Agreement(0 + 0 + 1 + 0, 6 + 6 + 3 + 1)
    assert overall_agreement(labels) == Agreement(6 + 0 + 0 + 1 + 0, 6 + 6 + 6 + 3 + 1)
    gold = agreement_with_gold(labels, {"g": ranks_of("xy")})
    assert gold == {"ann": Agreement(1, 1), "cat": Agreement(0, 1)}


def _person(name, others, gold=(None, 0, 0)):
    def m(rate, agreed, pairs):
        return {"rate": rate, "agreed": agreed, "pairs": pairs}

    return {"name": name, "agreement_with_others": m(*others), "agreement_with_gold": m(*gold)}


def test_exclusions_name_the_measure_below_the_bar():
    quality = {
        "labellers": [
            _person("ann", (0.9, 9, 10), (1.0, 6, 6)),
            _person("cat", (0.1, 1, 10), (0.0, 0, 6)),
            _person("dan", (0.9, 9, 10), (0.5, 3, 6)),
            _person("new", (None, 0, 0)),  # nothing measured yet: kept
        ]
    }
    out = exclusions(quality, 0.6)
    assert sorted(out) == ["cat", "dan"]
    assert out["cat"] == (
        "agreement with other labellers 0.10 (1/10 pairs) < 0.6; "
        "agreement with gold tasks 0.00 (0/6 pairs) < 0.6"
    )
    assert out["dan"] == "agreement with gold tasks 0.50 (3/6 pairs) < 0.6"
    assert exclusions(quality, None) == {}
