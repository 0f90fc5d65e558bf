"""The path of docs/labelling.md ("The path, command by command") run as written there: an SFT
model -> candidates -> two labellers and an admin -> the batch imported with a gold task ->
both labellers rank every task through a real ``rlhf label serve`` -> their agreement ->
the export -> ``rlhf prepare`` -> a reward model trained on it, which then judges the batch.

The commands are read from the page itself, so a wrong command or flag there fails here.
Flags that only make it fast (short answers, no MLflow, a few training steps) are appended."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from pathlib import Path

import pytest
from integration.servers import Server, free_port
from label_servers import SRC, call

from rlhf import storage
from rlhf.cli import main
from rlhf.labelling.batch import read_tasks

DOC = Path(__file__).resolve().parents[2] / "docs" / "labelling.md"
FAST = {
    ("label", "sample"): ["--max-new-tokens", "8", "--seed", "1", "--no-track"],
    ("prepare",): ["--no-track"],
    ("reward",): ["--no-track", "--set", "batch_size=8", "--set", "eval_every=0"],
}
PROMPTS = (
    "Create a shopping list from this recipe: pancakes",
    "Create a shopping list from this recipe: tomato soup",
    "Create a shopping list from this recipe: green salad",
)
ALICE = ["c0", "c1", "c2", "c3"]  # every task; also the gold order
# bob: one swap against alice on the gold task (5 of 6 pairs agree), two on the others (4 of 6)
BOB_GOLD, BOB = ["c0", "c1", "c3", "c2"], ["c1", "c0", "c3", "c2"]


def doc_commands(section: str) -> list[list[str]]:
    """The ``rlhf`` commands of the first bash block after ``section`` in docs/labelling.md,
    continuation lines joined and comments dropped, without the leading ``rlhf``."""
    text = DOC.read_text(encoding="utf-8")
    start = text.index("```bash\n", text.index(section)) + len("```bash\n")
    block = text[start : text.index("```", start)].replace("\\\n", " ")
    commands = [shlex.split(line, comments=True) for line in block.splitlines()]
    assert all(c[0] == "rlhf" for c in commands if c), block
    return [c[1:] for c in commands if c]


def _run(argv: list[str], capsys) -> str:
    """One documented command through the real CLI (plus its speed flags); its stdout."""
    extra = next((f for key, f in FAST.items() if tuple(argv[: len(key)]) == key), [])
    capsys.readouterr()
    assert main([*argv, *extra]) == 0, argv
    return capsys.readouterr().out


def _serve(argv: list[str], cwd: Path) -> Server:
    """The documented ``rlhf label serve`` as a subprocess in ``cwd``, on a free local port."""
    args = list(argv)
    port = free_port()
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(port)
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    server = Server("rlhf label serve", [sys.executable, "-m", "rlhf", *args], port,
                    cwd / "app.log", env, cwd=cwd)  # fmt: skip
    server.wait_ready("/static/app.js")
    return server


def _label_everything(url: str, name: str, token: str, orders: dict[str, list[str]]) -> int:
    """Sign in as ``name`` and rank each task of the queue in the order given for its prompt
    (scores 7, 6, 5, 4 down the ranking); returns how many were submitted."""
    status, signed_in = call(f"{url}/api/session", "POST", {"name": name, "secret": token})
    assert status == 200, signed_in
    session = signed_in["token"]
    done = 0
    while True:
        status, body = call(f"{url}/api/next", token=session)
        assert status == 200, body
        if body["task"] is None:
            assert body["progress"] == {"assigned": done, "done": done, "skipped": 0}
            return done
        task = body["task"]
        order = orders[task["prompt"][-1]["content"]]
        assert sorted(a["id"] for a in task["answers"]) == sorted(order)
        answer = {"ranking": order, "scores": {c: 7 - i for i, c in enumerate(order)}}
        status, saved = call(f"{url}/api/assignments/{task['assignment']}", "POST", answer, session)
        assert (status, saved["saved"]) == (201, True), saved
        done += 1


def test_the_documented_path_from_an_sft_model_to_a_reward_model(
    micro_sft, tmp_path, monkeypatch, capsys
):
    commands = doc_commands("## The path, command by command")
    assert [c[:2] for c in commands] == [
        ["label", "sample"], ["label", "user"], ["label", "user"], ["label", "user"],
        ["label", "import"], ["label", "serve"], ["label", "stats"], ["label", "export"],
        ["prepare", "--preferences"], ["reward", "--preferences"],
    ]  # fmt: skip
    sample, *users, import_, serve, stats, export, prepare, reward = commands

    # What the page starts from: the SFT model and a prompts file, where its paths say.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RLHF_LABEL_DB", raising=False)  # the default database, in this folder
    shutil.copytree(micro_sft, tmp_path / sample[sample.index("--model") + 1])
    prompts = tmp_path / sample[sample.index("--prompts") + 1]
    prompts.parent.mkdir(parents=True)
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))

    # 1. Candidates.
    _run(sample, capsys)
    batch = sample[sample.index("--out") + 1]
    tasks = list(read_tasks(batch))
    assert [len({c.text for c in t.candidates}) for t in tasks] == [4, 4, 4]
    by_prompt = {t.prompt[-1]["content"]: t.task_id for t in tasks}
    assert sorted(by_prompt) == sorted(PROMPTS)

    # 2. Two labellers and an admin; each prints a token.
    tokens = {}
    for argv in users:
        out = _run(argv, capsys)
        tokens[argv[3]] = out.strip().splitlines()[-1]
    assert sorted(tokens) == ["alice", "bob", "lead"] and "admin lead added" in out

    # 3. The batch and its gold task (the first prompt's, in alice's order).
    gold = Path(import_[import_.index("--gold") + 1])
    gold.write_text(json.dumps({"task_id": by_prompt[PROMPTS[0]], "ranking": ALICE}) + "\n")
    out = _run(import_, capsys)
    # 2 non-gold tasks x 2 labellers + the gold task to both (the admin labels nothing)
    assert "3 tasks imported (1 gold), 0 already there; 6 assignments made" in out

    # 4. The app: both labellers rank every task of their queues over HTTP.
    server = _serve(serve, tmp_path)
    try:
        alice = dict.fromkeys(PROMPTS, ALICE)
        bob = {**dict.fromkeys(PROMPTS, BOB), PROMPTS[0]: BOB_GOLD}
        assert _label_everything(server.url, "alice", tokens["alice"], alice) == 3
        assert _label_everything(server.url, "bob", tokens["bob"], bob) == 3
        status, report = call(f"{server.url}/api/report", token=tokens["lead"])
        assert status == 200 and report["pair_agreement"]["pairs"] == 18
    finally:
        server.stop()

    # 5. Their agreement, worked out by hand: per task alice and bob agree on 5 (gold task) +
    # 4 + 4 of 6 pairs = 13/18; with the gold order alice 6/6, bob 5/6.
    out = _run(stats, capsys)
    assert "pair agreement between labellers: 72.2% (13/18)" in out, out
    quality = json.loads(_run([*stats, "--json"], capsys))
    assert quality["pair_agreement"] == {"rate": 13 / 18, "agreed": 13, "pairs": 18}
    people = {p["name"]: p for p in quality["labellers"]}
    assert people["bob"]["agreement_with_others"]["rate"] == 13 / 18
    assert people["alice"]["agreement_with_gold"] == {"rate": 1.0, "agreed": 6, "pairs": 6}
    assert people["bob"]["agreement_with_gold"] == {"rate": 5 / 6, "agreed": 5, "pairs": 6}

    # 6. The export (both above the 0.6 bar: nobody left out), prepare, the reward model.
    out = _run(export, capsys)
    assert "excluded" not in out and "36 pairs from 6 rankings" in out
    exported = Path(export[export.index("--out") + 1])
    rows = [json.loads(line) for line in (exported / "preferences.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 3 * 6 and {r["labeller"] for r in rows} == {"alice", "bob"}
    first = next(r for r in rows if r["labeller"] == "alice" and r["chosen_id"] == "c0"
                 and r["rejected_id"] == "c3")  # fmt: skip
    assert first["margin"] == pytest.approx((7 - 4) / 6)
    _run(prepare, capsys)
    prepared = Path(prepare[prepare.index("--out") + 1]) / "preferences"
    assert prepared == Path(reward[reward.index("--preferences") + 1])
    # prepare drops a pair both labellers gave with the same margin as a duplicate: c0>c1 on
    # the gold task, c0>c2 and c1>c3 on each other task (the other agreed pairs differ in
    # margin, and disagreements are both kept): 36 - 5 rows.
    prepared_manifest = storage.read_manifest(prepared)
    assert (prepared_manifest["input_rows"], prepared_manifest["duplicates_dropped"]) == (36, 5)
    assert sum(prepared_manifest["rows"].values()) == 31
    # The 18 - 13 = 5 pairs alice and bob ordered differently, each kept in both orders.
    assert prepared_manifest["contradicting_pairs"] == 10
    out = _run(reward, capsys)
    assert '"steps": 3.0' in out  # 21 training pairs in batches of 8
    model = Path(reward[reward.index("--out") + 1])
    assert f"reward model: {model.resolve()}" in out
    assert storage.read_manifest(model)["artifact"] == "reward_model"

    # The reward model loads and scores: the page's AI judge on the same batch, compared
    # with the people's export.
    (judge,) = doc_commands("An AI judge instead of people")[:1]
    assert judge[:2] == ["judge", "--batch"]
    out = _run(judge, capsys)
    ai = Path(judge[judge.index("--out") + 1])
    manifest = storage.read_manifest(ai)
    agreement = manifest["human_agreement"]
    assert set(agreement["by_labeller"]) == {"alice", "bob"}
    assert agreement["compared"] + agreement["judge_ties"] == 36
