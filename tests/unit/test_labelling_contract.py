"""The labelling batch and the feedback export: what the app, the sampler and the judge share."""

import json

import pytest

from rlhf import storage
from rlhf.data.errors import DataError, EmptyInput, Location
from rlhf.data.formats import normalise_row
from rlhf.labelling.batch import Candidate, Task, read_tasks, write_batch
from rlhf.labelling.export import Pair, check_scores, ranking_pairs, write_export


def _task(task_id="t1", texts=("A.", "B.", "C.", "D.")):
    cands = tuple(Candidate(f"c{i}", t, "sft") for i, t in enumerate(texts))
    return Task(task_id, ({"role": "user", "content": "Name a colour."},), cands)


def test_batch_round_trip_and_manifest(tmp_path):
    dest = str(tmp_path / "batch")
    write_batch([_task("t1"), _task("t2", ("x", "y"))], dest, {"seed": 3})
    assert [t.task_id for t in read_tasks(dest)] == ["t1", "t2"]
    assert list(read_tasks(dest))[0] == _task("t1")
    manifest = storage.read_manifest(dest)
    assert (manifest["artifact"], manifest["tasks"], manifest["seed"]) == ("labelling_batch", 2, 3)
    assert manifest["candidates_per_task"] == [2, 4]


def test_plain_string_prompt_becomes_a_user_message(tmp_path):
    f = tmp_path / "tasks.jsonl"
    row = {
        "task_id": "a",
        "prompt": "Hi?",
        "candidates": [{"id": "1", "text": "x"}, {"id": "2", "text": "y"}],
    }
    f.write_text(json.dumps(row) + "\n")
    (task,) = read_tasks(str(f))
    assert task.prompt == ({"role": "user", "content": "Hi?"},)
    assert task.candidates[0].source == ""


@pytest.mark.parametrize(
    "candidates, field, words",
    [
        ([{"id": "1", "text": "x"}], "candidates", "at least 2"),
        ([{"id": "1", "text": "x"}, {"id": "1", "text": "y"}], "candidates[1].id", "unique"),
        ([{"id": "1", "text": "x"}, {"id": "2", "text": "x"}], "candidates[1].text", "differ"),
        ([{"id": "1", "text": "x"}, {"id": "2", "text": ""}], "candidates[1].text", "non-empty"),
    ],
)
def test_bad_task_names_file_line_and_field(tmp_path, candidates, field, words):
    f = tmp_path / "tasks.jsonl"
    good = {
        "task_id": "a",
        "prompt": "Hi?",
        "candidates": [{"id": "1", "text": "x"}, {"id": "2", "text": "y"}],
    }
    f.write_text(
        json.dumps(good)
        + "\n"
        + json.dumps({**good, "task_id": "b", "candidates": candidates})
        + "\n"
    )
    with pytest.raises(DataError) as e:
        list(read_tasks(str(f)))
    assert (e.value.file, e.value.location, e.value.field) == (str(f), Location(2, "line"), field)
    assert words in e.value.reason


def test_repeated_task_id_and_empty_inputs(tmp_path):
    f = tmp_path / "tasks.jsonl"
    row = {
        "task_id": "a",
        "prompt": "Hi?",
        "candidates": [{"id": "1", "text": "x"}, {"id": "2", "text": "y"}],
    }
    f.write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DataError, match="line 2: field 'task_id': repeats the task id of line 1"):
        list(read_tasks(str(f)))
    with pytest.raises(EmptyInput):
        write_batch([], str(tmp_path / "empty"), {})
    assert not (tmp_path / "empty").exists()


def test_a_ranking_of_four_gives_its_six_pairs_with_score_margins():
    task = _task()
    ranks = {"c2": 1, "c0": 2, "c3": 3, "c1": 4}  # C > A > D > B
    scores = {"c2": 7, "c0": 5, "c3": 2, "c1": 2}
    pairs = list(ranking_pairs(task, "alice", ranks, scores))
    assert [(p.chosen_id, p.rejected_id) for p in pairs] == [
        ("c2", "c0"),
        ("c2", "c3"),
        ("c2", "c1"),
        ("c0", "c3"),
        ("c0", "c1"),
        ("c3", "c1"),
    ]
    # (7-5)/6, (7-2)/6, (7-2)/6, (5-2)/6, (5-2)/6, (2-2)/6
    assert [p.margin for p in pairs] == pytest.approx([1 / 3, 5 / 6, 5 / 6, 0.5, 0.5, 0.0])


def test_ties_give_no_pair_and_contradicting_scores_no_margin():
    task = _task()
    pairs = list(
        ranking_pairs(
            task, "bob", {"c0": 1, "c1": 1, "c2": 2, "c3": 3}, {"c0": 3, "c1": 6, "c2": 4, "c3": 4}
        )
    )
    assert [(p.chosen_id, p.rejected_id) for p in pairs] == [
        ("c0", "c2"),
        ("c0", "c3"),
        ("c1", "c2"),
        ("c1", "c3"),
        ("c2", "c3"),
    ]
    assert pairs[0].margin is None  # ranked better, scored 3 against 4
    with pytest.raises(ValueError, match="each candidate"):
        list(ranking_pairs(task, "bob", {"c0": 1, "c1": 2}))


def test_check_scores():
    check_scores({"a": 1, "b": 7}, ["a", "b"])
    for bad in (
        {"a": 0, "b": 7},
        {"a": 1, "b": 8},
        {"a": 1.5, "b": 2},
        {"a": True, "b": 2},
        {"a": 1},
    ):
        with pytest.raises(ValueError):
            check_scores(bad, ["a", "b"])


def test_export_rows_are_prepare_preference_rows(tmp_path):
    task = _task()
    pairs = list(ranking_pairs(task, "alice", {"c0": 1, "c1": 2, "c2": 3, "c3": 4}, agreement=0.75))
    dest = str(tmp_path / "export")
    write_export(pairs, dest, {"min_agreement": 0.5})
    text = (tmp_path / "export" / "preferences.jsonl").read_text()
    rows = [json.loads(line) for line in text.splitlines()]
    assert len(rows) == 6 and rows[0]["labeller"] == "alice" and rows[0]["agreement"] == 0.75
    (normalised,) = normalise_row("preference", rows[0], file="x", location=Location(1, "line"))
    assert (normalised["chosen"], normalised["rejected"], normalised["margin"]) == (
        "A.",
        "B.",
        None,
    )
    manifest = storage.read_manifest(dest)
    assert (manifest["pairs"], manifest["tasks"], manifest["labellers"]) == (6, 1, ["alice"])
    with pytest.raises(EmptyInput):
        write_export([], str(tmp_path / "none"), {})
    assert isinstance(pairs[0], Pair)
