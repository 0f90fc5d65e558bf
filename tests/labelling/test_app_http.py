"""The labelling app over HTTP, a real uvicorn server on SQLite and on PostgreSQL: refusals
store nothing, 50 concurrent submissions land exactly once, and a server killed with SIGKILL
loses no acknowledged submission."""

from __future__ import annotations

import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from label_data import assignments_of, make_tasks, seed
from label_servers import call, start_app
from sqlalchemy import select

from rlhf.labelling.db import Submission, open_engine, transaction


def _submissions(db: str) -> list[Submission]:
    engine = open_engine(db)
    with transaction(engine) as session:
        rows = list(session.scalars(select(Submission).order_by(Submission.assignment_id)))
    engine.dispose()
    return rows


def _ranking(task: dict) -> dict:
    ids = [a["id"] for a in task["answers"]]
    return {"ranking": ids, "scores": {cid: 7 - i for i, cid in enumerate(ids)}}


@pytest.fixture
def app(db_url, tmp_path):
    server = start_app(db_url, tmp_path / "app.log")
    yield server
    server.stop()


def test_refusals_idempotency_and_fifty_concurrent_submissions(db_url, app):
    """One server per database, two parts: refusals store nothing and a resubmission is
    idempotent; then 50 concurrent submissions (each sent twice at once) land exactly once."""
    people = [f"l{i}" for i in range(5)]
    tokens = seed(db_url, people, make_tasks(26), per_task=2)  # l0, l1 get 11 tasks, l2-l4 10
    url = app.url
    # Wrong or missing token: refused before anything is read or written.
    assert call(f"{url}/api/next", token="not-a-token") == (
        401,
        {"detail": "invalid token: sign in again"},
    )
    status, body = call(f"{url}/api/next")
    assert status == 401 and "not signed in" in body["detail"]
    status, body = call(f"{url}/api/session", "POST", {"name": "l0", "secret": "wrong"})
    assert (status, body["detail"]) == (401, "wrong name, token or password")

    status, mine = call(f"{url}/api/next", token=tokens["l0"])
    assert status == 200 and mine["progress"] == {"assigned": 11, "done": 0, "skipped": 0}
    task = mine["task"]
    assert len(task["answers"]) == 4 and "source" not in task["answers"][0]
    own = task["assignment"]
    theirs = call(f"{url}/api/next", token=tokens["l1"])[1]["task"]["assignment"]
    good = _ranking(task)
    ids = good["ranking"]

    refusals = [
        (own, {**good, "ranking": ids[:3]}, tokens["l0"], 422, "incomplete ranking"),
        (own, {**good, "ranking": [*ids[:3], ids[0]]}, tokens["l0"], 422, "incomplete ranking"),
        (own, {**good, "scores": {**good["scores"], ids[0]: 8}}, tokens["l0"], 422,
         f"score of {ids[0]!r} must be an integer from 1 to 7, got 8"),
        (own, {**good, "scores": {**good["scores"], ids[1]: 0}}, tokens["l0"], 422,
         "from 1 to 7"),
        (own, {**good, "flags": {ids[0]: ["boring"]}}, tokens["l0"], 422, "flags must"),
        (theirs, good, tokens["l0"], 403, f"assignment {theirs} is another labeller's task"),
        (own, good, "wrong-token", 401, "invalid token"),
        (own, good, None, 401, "not signed in"),
        (10**6, good, tokens["l0"], 404, "there is no assignment"),
    ]  # fmt: skip
    for assignment, body, token, status, words in refusals:
        got, answer = call(f"{url}/api/assignments/{assignment}", "POST", body, token)
        assert (got, words in answer["detail"]) == (status, True), (body, answer)
    assert _submissions(db_url) == []

    # Stored once; the same answer again is acknowledged, a different one refused.
    flagged = {**good, "flags": {ids[2]: ["unsafe", "nonsense"]}}
    status, body = call(f"{url}/api/assignments/{own}", "POST", flagged, tokens["l0"])
    assert (status, body["stored_now"], body["progress"]["done"]) == (201, True, 1)
    status, body = call(f"{url}/api/assignments/{own}", "POST", flagged, tokens["l0"])
    assert (status, body["stored_now"]) == (200, False)
    status, body = call(f"{url}/api/assignments/{own}", "POST", good, tokens["l0"])
    assert status == 409 and "answered already" in body["detail"]
    (stored,) = _submissions(db_url)
    assert (stored.ranking, stored.flags) == (ids, {ids[2]: ["nonsense", "unsafe"]})
    assert call(f"{url}/api/next", token=tokens["l0"])[1]["task"]["assignment"] != own

    # A sign-in gives a session token; l1 skips their task with it. Not an admin: no report.
    status, body = call(f"{url}/api/session", "POST", {"name": "l1", "secret": tokens["l1"]})
    assert status == 200 and body["name"] == "l1"
    status, body = call(f"{url}/api/assignments/{theirs}", "POST", {"skip": True}, body["token"])
    assert status == 201 and body["progress"] == {"assigned": 11, "done": 0, "skipped": 1}
    assert call(f"{url}/api/report", token=tokens["l1"])[0] == 403

    # The other 50 assignments, all at once, each sent by two clients at the same moment (a
    # double click, a retry): one is stored (201), the other acknowledged (200), none doubled.
    todo = [job for job in assignments_of(db_url) if job[0] not in (own, theirs)]
    assert len(todo) == 50
    barrier = threading.Barrier(100)

    def submit(job):
        assignment, name, _ = job
        body = {
            "ranking": ["c3", "c1", "c0", "c2"],
            "scores": {"c0": 4, "c1": 5, "c2": 1, "c3": 7},
        }
        barrier.wait()
        return call(f"{url}/api/assignments/{assignment}", "POST", body, tokens[name])[0]

    with ThreadPoolExecutor(100) as pool:
        statuses = list(pool.map(submit, todo + todo))
    pairs = sorted(zip(statuses[:50], statuses[50:], strict=True))
    assert [sorted(p) for p in pairs] == [[200, 201]] * 50
    stored = _submissions(db_url)
    assert len(stored) == 52
    assert sorted(s.assignment_id for s in stored) == sorted(
        a for a, _, _ in assignments_of(db_url)
    )


def test_killed_server_loses_no_acknowledged_submission(db_url, app):
    people = [f"k{i}" for i in range(4)]
    tokens = seed(db_url, people, make_tasks(40), per_task=2)
    todo = assignments_of(db_url)
    acknowledged: list[int] = []
    lock = threading.Lock()
    enough = threading.Event()

    def submit(job):
        assignment, name, _ = job
        body = {"ranking": ["c0", "c1", "c2", "c3"], "scores": {"c0": 7, "c1": 5, "c2": 3, "c3": 1}}
        try:
            status, _ = call(f"{app.url}/api/assignments/{assignment}", "POST", body, tokens[name])
        except OSError:
            return  # the server died under this request: never acknowledged
        if status == 201:
            with lock:
                acknowledged.append(assignment)
                if len(acknowledged) >= 20:
                    enough.set()

    with ThreadPoolExecutor(8) as pool:
        for job in todo:
            pool.submit(submit, job)
        assert enough.wait(120)
        os.killpg(app.proc.pid, signal.SIGKILL)  # while requests are in flight
    app.stop()
    stored = {s.assignment_id: s for s in _submissions(db_url)}
    assert set(acknowledged) <= set(stored), set(acknowledged) - set(stored)
    assert all(stored[a].ranking == ["c0", "c1", "c2", "c3"] for a in acknowledged)

    # Every answer in the database is whole: each is one of the submitted rankings.
    assert all(s.scores == {"c0": 7, "c1": 5, "c2": 3, "c3": 1} for s in stored.values())
