"""``rlhf judge`` with real models: a trained reward model ranks by its own scores, a tiny
causal LM judges pairs in both orders, the export passes ``rlhf prepare`` and the judge's
agreement with human labels lands in the console and the manifest."""

import json

import pytest

from rlhf import storage
from rlhf.cli import main
from rlhf.labelling.batch import Candidate, Task, write_batch
from rlhf.labelling.export import ranking_pairs, write_export
from rlhf.labelling.judges import score_ranks
from rlhf.modeling.reward_scoring import RewardScorer

PROMPT = ({"role": "user", "content": "Create a shopping list from this recipe: pancakes"},)
ANSWERS = ("flour, eggs, milk", "eggs", "flour, flour, flour", "rice, tofu, parsley")


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    root = tmp_path_factory.mktemp("judge-batch")
    tasks = [
        Task(
            f"t{n}",
            PROMPT,
            tuple(Candidate(f"c{i}", f"{a}{extra}", "sft") for i, a in enumerate(ANSWERS)),
        )  # fmt: skip
        for n, extra in enumerate(("", ", sugar"), start=1)
    ]
    write_batch(tasks, str(root / "batch"), {"test": True})
    return str(root / "batch"), tasks


def _rows(export):
    text = (storage.local_path(export) / "preferences.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def test_reward_model_judge_ranks_by_the_scores_and_passes_prepare(
    micro_models, batch, tmp_path, capsys
):
    uri, tasks = batch
    out = tmp_path / "export"
    code = main(["judge", "--batch", uri, "--out", str(out),
                 "--judge", f"reward-model:{micro_models['reward_scalar']}",
                 "--set", "device=cpu"])  # fmt: skip
    assert code == 0
    rows = _rows(out)
    scorer = RewardScorer.load(micro_models["reward_scalar"], "cpu")
    expected = []
    for task in tasks:
        scores = scorer.score([list(PROMPT)] * 4, [c.text for c in task.candidates]).tolist()
        ranks = score_ranks({c.id: s for c, s in zip(task.candidates, scores, strict=True)})
        expected += [(task.task_id, p.chosen_id, p.rejected_id)
                     for p in ranking_pairs(task, "judge:reward-model", ranks)]  # fmt: skip
    assert [(r["task_id"], r["chosen_id"], r["rejected_id"]) for r in rows] == expected
    assert len(rows) == 12 and {r["labeller"] for r in rows} == {"judge:reward-model"}
    manifest = storage.read_manifest(out)
    assert manifest["artifact"] == "feedback_export" and manifest["pairs"] == 12
    assert manifest["labellers"] == ["judge:reward-model"]
    assert "feedback export:" in capsys.readouterr().out

    # The export is preference data: rlhf prepare (its real entry point) reads it as it is.
    prep = tmp_path / "prepared"
    code = main(["prepare", "--no-track", "--preferences", str(out / "preferences.jsonl"),
                 "--out", str(prep)])  # fmt: skip
    assert code == 0
    meta = storage.read_manifest(prep / "preferences")
    assert json.dumps(meta).count("12") >= 1
    assert "preference pairs" in capsys.readouterr().err


def test_human_agreement_in_the_console_and_the_manifest(micro_models, batch, tmp_path, capsys):
    uri, tasks = batch
    judge = f"reward-model:{micro_models['reward_scalar']}"
    mine = tmp_path / "mine"
    assert main(["judge", "--batch", uri, "--out", str(mine), "--judge", judge]) == 0
    judged = {(r["task_id"], r["chosen_id"], r["rejected_id"]) for r in _rows(mine)}
    # A human export: alice ranks c0 > c1 > c2 > c3 on both tasks (12 pairs).
    human = tmp_path / "human"
    ranks = {"c0": 1, "c1": 2, "c2": 3, "c3": 4}
    write_export([p for t in tasks for p in ranking_pairs(t, "alice", ranks)], str(human), {})
    alice = {(t.task_id, a, b) for t in tasks for a in ranks for b in ranks if ranks[a] < ranks[b]}
    agreed = len(alice & judged)  # the judge ranked all four: every human pair is compared
    capsys.readouterr()
    out = tmp_path / "export"
    argv = ["judge", "--batch", uri, "--out", str(out), "--judge", judge, "--human", str(human)]
    assert main(argv) == 0
    agreement = storage.read_manifest(out)["human_agreement"]
    assert (agreement["human_pairs"], agreement["compared"], agreement["agreed"]) == (
        12,
        12,
        agreed,
    )
    assert agreement["by_labeller"]["alice"]["agreement"] == pytest.approx(agreed / 12)
    console = capsys.readouterr().out
    assert f"agreement with human labels: {agreed / 12:.1%} ({agreed} of 12 pairs" in console


def test_lm_judge_on_a_tiny_lm_cancels_its_position_bias(micro_models, batch, tmp_path, capsys):
    """The micro SFT model, asked which answer is better, gives the same reply whatever the
    answers: judged in both orders, every pair is a tie, so it labels nothing, and says so."""
    uri, _ = batch
    template = tmp_path / "template.txt"
    template.write_text("Q: {prompt}\nA: {first}\nB: {second}\nBetter:")
    out = tmp_path / "export"
    argv = ["judge", "--batch", uri, "--out", str(out), "--judge", f"lm:{micro_models['sft']}",
            "--template-file", str(template), "--set", "device=cpu", "--set", "labels=A,B"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "judge:lm gave no preference pair on 2 task(s): all 12 pairs were ties" in err
    assert not out.exists()


def test_bad_inputs_are_clear_errors(batch, tmp_path, capsys):
    uri, _ = batch
    assert main(["judge", "--batch", uri, "--out", str(tmp_path / "e"), "--judge", "rm:x"]) == 2
    assert "--judge must be reward-model:DIR" in capsys.readouterr().err
    bad = tmp_path / "human.jsonl"
    bad.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n")
    argv = ["judge", "--batch", uri, "--out", str(tmp_path / "e"),
            "--judge", "function:rlhf.data.demo_task:gold_reward", "--human", str(bad)]  # fmt: skip
    assert main(argv) == 2
    assert "human.jsonl: line 1: field 'task_id'" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def test_lm_label_logprobs_are_the_next_token_logprobs(micro_models):
    """With one-token labels, the score of a label is log softmax of the logits right after the
    rendered judging prompt, read off the model by hand here."""
    import torch

    from rlhf.config import JudgeConfig
    from rlhf.labelling.pairwise_judge import lm_label_logprobs
    from rlhf.modeling import models
    from rlhf.modeling.encoding import encode_prompt

    config = JudgeConfig(device="cpu")
    score = lm_label_logprobs(micro_models["sft"], config)
    text = "Which is better? A: eggs B: flour"
    tokenizer = models.load_tokenizer(micro_models["sft"])
    model = models.load_causal_lm(micro_models["sft"]).eval()
    ids = encode_prompt(tokenizer, [{"role": "user", "content": text}])
    labels = [tokenizer("A", add_special_tokens=False)["input_ids"],
              tokenizer("B", add_special_tokens=False)["input_ids"]]  # fmt: skip
    assert [len(x) for x in labels] == [1, 1]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1].log_softmax(-1)
    expected = (logits[labels[0][0]].item(), logits[labels[1][0]].item())
    assert score([text, text])[1] == pytest.approx(expected, abs=1e-4)
