"""``rlhf label`` without a server: import with gold tasks, stats, and an export that leaves
out a labeller who disagrees with the others and with gold, saying why."""

from __future__ import annotations

import json

import pytest
from label_data import make_tasks
from sqlalchemy import select

from rlhf import storage
from rlhf.cli import main
from rlhf.labelling.accounts import Account
from rlhf.labelling.assignments import submit
from rlhf.labelling.batch import write_batch
from rlhf.labelling.db import Assignment, Labeller, TaskRow, open_engine, transaction


def _rank_all(db: str, orders: dict[str, list[str]]) -> None:
    """Each labeller ranks each of their tasks in the order given for them."""
    engine = open_engine(db)
    with transaction(engine) as session:
        for assignment, person in session.execute(
            select(Assignment, Labeller).join(Labeller, Assignment.labeller_id == Labeller.id)
        ):
            order = orders[person.name]
            body = {"ranking": order, "scores": {c: 7 - i for i, c in enumerate(order)}}
            submit(session, Account(person.id, person.name, False), assignment.id, body)
    engine.dispose()


def test_import_stats_and_export_leave_out_a_disagreeing_labeller(tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'labels.db'}"
    batch = str(tmp_path / "batch")
    write_batch(make_tasks(3), batch, {"source": "test"})
    gold = tmp_path / "gold.jsonl"
    gold.write_text(json.dumps({"task_id": "t002", "ranking": ["c0", "c1", "c2", "c3"]}) + "\n")
    for name in ("ann", "bob", "cat"):
        assert main(["label", "user", "add", name, "--db", db]) == 0
    capsys.readouterr()
    assert main(["label", "import", batch, "--db", db, "--gold", str(gold),
                 "--labellers-per-task", "3"]) == 0  # fmt: skip
    assert capsys.readouterr().out.startswith("batch batch: 3 tasks imported (1 gold), 0 already")
    assert main(["label", "import", batch, "--db", db, "--gold", str(gold)]) == 0
    assert "0 tasks imported (0 gold), 3 already there; 0 assignments" in capsys.readouterr().out

    # ann and bob agree with gold; cat reverses every ranking.
    _rank_all(db, {"ann": ["c0", "c1", "c2", "c3"], "bob": ["c0", "c1", "c3", "c2"],
                   "cat": ["c3", "c2", "c1", "c0"]})  # fmt: skip
    assert main(["label", "stats", "--db", db, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    people = {p["name"]: p for p in stats["labellers"]}
    # per task: ann-bob 5/6, ann-cat 0/6, bob-cat 1/6; three tasks
    assert people["ann"]["agreement_with_others"] == {"rate": 15 / 36, "agreed": 15, "pairs": 36}
    assert people["cat"]["agreement_with_others"] == {"rate": 3 / 36, "agreed": 3, "pairs": 36}
    assert people["bob"]["agreement_with_gold"] == {"rate": 5 / 6, "agreed": 5, "pairs": 6}
    assert stats["pair_agreement"] == {"rate": 18 / 54, "agreed": 18, "pairs": 54}
    assert main(["label", "stats", "--db", db]) == 0
    assert "pair agreement between labellers: 33.3% (18/54)" in capsys.readouterr().out

    out = tmp_path / "export"
    assert main(["label", "export", "--db", db, "--out", str(out), "--min-agreement", "0.3"]) == 0
    printed = capsys.readouterr().out
    assert "excluded cat: agreement with other labellers 0.08 (3/36 pairs) < 0.3; agreement " \
        "with gold tasks 0.00 (0/6 pairs) < 0.3" in printed  # fmt: skip
    rows = [json.loads(line) for line in (out / "preferences.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 3 * 6 and {r["labeller"] for r in rows} == {"ann", "bob"}
    manifest = storage.read_manifest(str(out))
    assert list(manifest["excluded_labellers"]) == ["cat"] and manifest["min_agreement"] == 0.3

    # Nobody left: an error, and nothing written.
    code = main(["label", "export", "--db", db, "--out", str(tmp_path / "none"),
                 "--min-agreement", "0.99"])  # fmt: skip
    assert code == 2 and not (tmp_path / "none").exists()
    assert "no ranking to export (excluded:" in capsys.readouterr().err


@pytest.mark.parametrize(
    "gold, words",
    [
        ({"task_id": "t000", "ranking": ["c0", "c0"]}, "field 'ranking': must list"),
        ({"task_id": "nope", "ranking": ["c0", "c1", "c2", "c3"]}, "not in the batch: ['nope']"),
        ({"task_id": "t000", "ranking": ["c0", "c1"]}, "must name each candidate"),
    ],
)
def test_bad_gold_is_refused_and_nothing_imported(tmp_path, capsys, gold, words):
    db = tmp_path / "labels.db"
    batch = str(tmp_path / "batch")
    write_batch(make_tasks(1), batch, {})
    path = tmp_path / "gold.jsonl"
    path.write_text(json.dumps(gold) + "\n")
    assert main(["label", "import", batch, "--db", str(db), "--gold", str(path)]) == 2
    assert words in capsys.readouterr().err
    engine = open_engine(str(db))
    with transaction(engine) as session:
        assert session.query(TaskRow).count() == 0


def test_conflicting_reimport_and_bad_names(tmp_path, capsys):
    db = str(tmp_path / "labels.db")
    first, second = tmp_path / "a.jsonl", tmp_path / "b" / "a.jsonl"
    second.parent.mkdir()
    row = {"task_id": "t1", "prompt": "Hi?", "candidates": [{"id": "x", "text": "1"},
                                                           {"id": "y", "text": "2"}]}  # fmt: skip
    first.write_text(json.dumps(row) + "\n")
    second.write_text(json.dumps({**row, "prompt": "Hello?"}) + "\n")
    assert main(["label", "import", str(first), "--db", db]) == 0
    assert main(["label", "import", str(second), "--db", db]) == 2
    assert "task 't1' is already in batch 'a' with other content" in capsys.readouterr().err
    assert main(["label", "import", str(second), "--db", db, "--name", "a2"]) == 0
    assert main(["label", "user", "add", "no spaces", "--db", db]) == 2
    assert "labeller name 'no spaces'" in capsys.readouterr().err
