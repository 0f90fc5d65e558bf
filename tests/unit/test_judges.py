"""The judges of AI feedback on hand-worked cases: ranks from scores, a function judge, the
pairwise judge's two orders and ties, and agreement with human labels."""

import pytest

from rlhf.config import JudgeConfig
from rlhf.labelling.batch import Candidate, Task
from rlhf.labelling.judge_agreement import HumanPair, agreement
from rlhf.labelling.judges import ScoringJudge, load_judge, parse_judge, score_ranks
from rlhf.labelling.pairwise_judge import PairwiseJudge, both_orders, judging_prompt

PROMPT = ({"role": "user", "content": "List fruit."},)
TASK = Task(
    "t1",
    PROMPT,
    tuple(Candidate(f"c{i}", t, "sft") for i, t in enumerate(("apple", "kiwi, fig", "a", "pear"))),
)


def test_score_ranks_are_dense_and_tie_equal_scores():
    assert score_ranks({"a": 0.9, "b": 0.5, "c": 0.5, "d": 0.1}) == {"a": 1, "b": 2, "c": 2, "d": 3}


def test_function_judge_ranks_by_its_scores(monkeypatch, tmp_path):
    # Scores: apple 5, "kiwi, fig" 7, a 1, pear 4 -> ranking c1 > c0 > c3 > c2, six pairs.
    module = tmp_path / "my_scores.py"
    module.write_text(
        "def score(prompt, texts):\n"
        "    return [len(t.replace(',', '').replace(' ', '')) for t in texts]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    judge = load_judge("function:my_scores:score", JudgeConfig())
    assert judge.name == "judge:function"
    pairs = judge.pairs(TASK)
    assert [(p.chosen_id, p.rejected_id) for p in pairs] == [
        ("c1", "c0"), ("c1", "c3"), ("c1", "c2"), ("c0", "c3"), ("c0", "c2"), ("c3", "c2"),
    ]  # fmt: skip
    assert {p.labeller for p in pairs} == {"judge:function"} and pairs[0].margin is None


def test_equal_scores_give_no_pair():
    judge = ScoringJudge("judge:function", lambda prompt, texts: [2, 2, 1, 2])
    pairs = judge.pairs(TASK)  # c0 = c1 = c3 > c2: three pairs, each over c2
    assert [(p.chosen_id, p.rejected_id) for p in pairs] == [("c0", "c2"), ("c1", "c2"),
                                                             ("c3", "c2")]  # fmt: skip
    bad = ScoringJudge("judge:function", lambda prompt, texts: [1.0])
    with pytest.raises(ValueError, match="task t1: 1 scores for 4 candidates"):
        bad.pairs(TASK)


def test_parse_judge_and_template_checks():
    assert parse_judge("reward-model:out/rm") == ("reward-model", "out/rm")
    assert parse_judge("function:pkg.mod:fn") == ("function", "pkg.mod:fn")
    for bad in ("rm:out", "lm:", "out/rm"):
        with pytest.raises(ValueError, match="--judge must be"):
            parse_judge(bad)
    with pytest.raises(ValueError, match=r"template must contain \{second\}"):
        JudgeConfig(template="{prompt} {first}")
    with pytest.raises(ValueError, match="labels must be two different"):
        JudgeConfig(labels=["A", "A"])


def test_judging_prompt_fills_each_key_once():
    text = judging_prompt("Q: {prompt}\nA: {first}\nB: {second}", PROMPT, "x {second}", "y")
    assert text == "Q: user: List fruit.\nA: x {second}\nB: y"


def _fake(prefer):
    """Label log-probs of a judge that reads the two answers off the prompt and prefers by
    ``prefer(first_text, second_text)``: True for the first shown."""

    def logprobs(prompts):
        out = []
        for p in prompts:
            first, second = p.split("<A>")[1].split("<B>")
            out.append((-0.1, -2.0) if prefer(first, second) else (-2.0, -0.1))
        return out

    return logprobs


TEMPLATE = "{prompt}<A>{first}<B>{second}"


def test_both_orders_decide_and_disagreement_is_a_tie():
    assert both_orders((-0.1, -2.0), (-2.0, -0.1)) == 1  # x as A wins, x as B wins
    assert both_orders((-2.0, -0.1), (-0.1, -2.0)) == -1
    assert both_orders((-0.1, -2.0), (-0.1, -2.0)) == 0  # always the first shown: a tie
    assert both_orders((-1.0, -1.0), (-2.0, -0.1)) == 0  # no preference in one order


def test_a_consistent_judge_gives_its_pairs():
    judge = PairwiseJudge("judge:lm", _fake(lambda a, b: len(a) > len(b)), TEMPLATE)
    pairs = judge.pairs(TASK)  # lengths: apple 5, "kiwi, fig" 9, a 1, pear 4
    assert sorted((p.chosen_id, p.rejected_id) for p in pairs) == sorted(
        [("c1", "c0"), ("c1", "c3"), ("c1", "c2"), ("c0", "c3"), ("c0", "c2"), ("c3", "c2")]
    )
    assert (judge.judged, judge.ties) == (6, 0)


def test_a_position_biased_judge_yields_only_ties():
    judge = PairwiseJudge("judge:lm", _fake(lambda a, b: True), TEMPLATE)
    assert judge.pairs(TASK) == []
    assert (judge.judged, judge.ties) == (6, 6)


def test_agreement_with_human_labels_on_the_pairs_both_labelled():
    other = Task("t2", PROMPT, TASK.candidates[:2])
    judge = ScoringJudge("judge:function", lambda prompt, texts: [4, 3, 2, 1][: len(texts)])
    pairs = judge.pairs(TASK) + judge.pairs(other)  # c0 > c1 > c2 > c3 in both
    human = [
        HumanPair("t1", "c0", "c1", "alice"),  # agrees
        HumanPair("t1", "c3", "c2", "alice"),  # disagrees
        HumanPair("t1", "c0", "c2", "bob"),  # agrees
        HumanPair("t2", "c1", "c0", "bob"),  # disagrees
        HumanPair("t9", "c0", "c1", "bob"),  # a task the judge did not see: not compared
    ]
    result = agreement(pairs, human, ["t1", "t2"])
    assert (result["compared"], result["agreed"], result["agreement"]) == (4, 2, 0.5)
    assert result["by_labeller"] == {
        "alice": {"compared": 2, "agreed": 1, "agreement": 0.5},
        "bob": {"compared": 2, "agreed": 1, "agreement": 0.5},
    }
    assert result["judge_ties"] == 0 and result["human_pairs"] == 5
    # The judge tied c0 and c1 in t1: the human pair on them is counted as a judge tie.
    tied = ScoringJudge("judge:function", lambda prompt, texts: [3, 3, 2, 1]).pairs(TASK)
    result = agreement(tied, human[:1], ["t1"])
    assert (result["compared"], result["agreement"], result["judge_ties"]) == (0, None, 1)


def test_app_exports_name_tasks_batch_slash_task_id():
    # rlhf label export writes "<batch>/<task_id>"; the judge's tasks are the batch's own ids.
    pairs = ScoringJudge("judge:function", lambda prompt, texts: [4, 3, 2, 1]).pairs(TASK)
    human = [HumanPair("runs/b1/t1", "c0", "c1", "alice"), HumanPair("b1/t1", "c3", "c2", "bob")]
    result = agreement(pairs, human, ["t1"])
    assert (result["compared"], result["agreed"]) == (2, 1)
