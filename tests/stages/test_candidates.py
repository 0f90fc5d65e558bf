"""Sampling candidates for labelling (``rlhf label sample``, the ``candidates`` stage) and
importing them from a file (``rlhf label import-candidates``), through the real CLI."""

import json
import shutil

import pytest

from rlhf import storage
from rlhf.cli import main
from rlhf.config import SampleConfig
from rlhf.labelling.batch import read_tasks
from rlhf.labelling.sampling import _Slots, _tasks, model_names, quotas, read_prompts

FAST = ["--max-new-tokens", "8", "--no-track"]


@pytest.fixture(scope="module")
def two_models(micro_models, tmp_path_factory):
    """The micro SFT model under two names (two sources of the same weights)."""
    root = tmp_path_factory.mktemp("sample-models")
    for name in ("policy-a", "policy-b"):
        shutil.copytree(micro_models["sft"], root / name)
    return [str(root / "policy-a"), str(root / "policy-b")]


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    f = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    rows = [
        {"prompt": "Create a shopping list from this recipe: pancakes"},
        {"prompt": [{"role": "user", "content": "Create a shopping list: soup"}]},
        {"prompt": "Create a shopping list from this recipe: salad"},
    ]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(f)


def _sample(models, prompts, out, *extra):
    argv = ["label", "sample", "--prompts", prompts, "--out", str(out), *FAST, *extra]
    for m in models:
        argv += ["--model", m]
    return main(argv)


def test_k_distinct_candidates_per_prompt_with_sources_and_manifest(
    two_models, prompts_file, tmp_path, capsys
):
    assert _sample(two_models, prompts_file, tmp_path / "b1", "--k", "4", "--seed", "3") == 0
    tasks = list(read_tasks(str(tmp_path / "b1")))
    assert [t.task_id for t in tasks] == ["t000001", "t000002", "t000003"]
    assert tasks[1].prompt == ({"role": "user", "content": "Create a shopping list: soup"},)
    for t in tasks:
        texts = [c.text for c in t.candidates]
        assert len(texts) == 4 and len(set(texts)) == 4
        assert [c.id for c in t.candidates] == ["c0", "c1", "c2", "c3"]
        # K=4 from two models: two each (a redraw keeps its model's share)
        assert sorted(c.source for c in t.candidates) == ["policy-a"] * 2 + ["policy-b"] * 2
    manifest = storage.read_manifest(tmp_path / "b1")
    assert manifest["artifact"] == "labelling_batch" and manifest["tasks"] == 3
    assert [(m["source"], m["candidates_per_task"]) for m in manifest["models"]] == [
        ("policy-a", 2),
        ("policy-b", 2),
    ]
    assert manifest["sampling"]["k"] == 4 and manifest["sampling"]["seed"] == 3
    assert manifest["sampling"]["max_new_tokens"] == 8
    assert "labelling batch:" in capsys.readouterr().out

    # The same seed gives the same batch; another seed another one.
    assert _sample(two_models, prompts_file, tmp_path / "b2", "--k", "4", "--seed", "3") == 0
    assert list(read_tasks(str(tmp_path / "b2"))) == tasks
    assert _sample(two_models, prompts_file, tmp_path / "b3", "--k", "4", "--seed", "4") == 0
    assert list(read_tasks(str(tmp_path / "b3"))) != tasks


def test_a_prepared_prompts_artifact_is_read(prepared):
    prompts = read_prompts(prepared["prompts"], max_prompts=5)
    assert len(prompts) == 5 and prompts[0][-1]["role"] == "user"


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--k", "1"], "k must be >= 2"),
        (["--k", "3", "--model", "x", "--model", "y", "--model", "z", "--model", "w"],
         "k (3) must be >= the number of models (4)"),
        (["--temperature", "0"], "temperature must be > 0"),
    ],
)  # fmt: skip
def test_bad_settings_exit_2_with_a_clear_message(micro_models, prompts_file, tmp_path, capsys,
                                                   argv, words):  # fmt: skip
    models = [] if "--model" in argv else [micro_models["sft"]]
    assert _sample(models, prompts_file, tmp_path / "b", *argv) == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_no_model_and_empty_or_bad_prompts_are_clear_errors(micro_models, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:  # argparse: --model is required
        main(["label", "sample", "--prompts", "p.jsonl", "--out", str(tmp_path / "b")])
    assert e.value.code == 2 and "--model" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert _sample([micro_models["sft"]], str(empty), tmp_path / "b") == 2
    assert "empty.jsonl" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "ok"}) + "\n" + json.dumps({"prompt": 3}) + "\n")
    assert _sample([micro_models["sft"]], str(bad), tmp_path / "b") == 2
    err = capsys.readouterr().err
    assert "bad.jsonl: line 2: field 'prompt'" in err
    assert not (tmp_path / "b").exists()


def test_quotas_names_and_the_dedup_rules():
    assert quotas(4, 2) == [2, 2] and quotas(5, 2) == [3, 2] and quotas(4, 1) == [4]
    with pytest.raises(ValueError, match="no model"):
        quotas(4, 0)
    assert model_names(["out/sft", "other/sft/", "s3://b/policy"]) == ["sft", "sft-2", "policy"]
    slots = _Slots()
    assert slots.take("a", "m") and not slots.take("a", "m") and not slots.take(" ", "m")
    # A task with two distinct answers is kept short; one with one is dropped.
    short, lone = _Slots([("a", "m"), ("b", "m")]), _Slots([("a", "m")])
    prompt = [{"role": "user", "content": "q"}]
    batch = _tasks([prompt, prompt], [short, lone], k=4, redrawn=5)
    assert [t.task_id for t in batch.tasks] == ["t000001"]
    assert batch.counts == {"tasks": 1.0, "candidates": 2.0, "redrawn": 5.0,
                            "tasks_short": 1.0, "tasks_dropped": 1.0}  # fmt: skip
    with pytest.raises(ValueError, match="fewer than 2 distinct answers"):
        _tasks([prompt], [lone], k=4, redrawn=0)
    with pytest.raises(ValueError, match="redraws must be >= 0"):
        SampleConfig(redraws=-1)


def test_duplicates_are_drawn_again(micro_models, prompts_file, tmp_path, capsys):
    """Two-token answers at a low temperature repeat: the redraws make them distinct (never a
    repeated text); a sampler so cold that every task stays below 2 distinct answers is a
    clear error, and nothing is written."""
    code = _sample([micro_models["sft"]], prompts_file, tmp_path / "b", "--k", "3",
                   "--temperature", "0.3", "--max-new-tokens", "2", "--set", "redraws=10")  # fmt: skip
    assert code == 0
    counts = storage.read_manifest(tmp_path / "b")["counts"]
    assert counts["redrawn"] > 0 and counts["tasks"] == 3
    for t in read_tasks(str(tmp_path / "b")):
        texts = [c.text for c in t.candidates]
        assert len(texts) == 3 and len(set(texts)) == 3
    code = _sample([micro_models["sft"]], prompts_file, tmp_path / "c", "--k", "3",
                   "--temperature", "0.01", "--max-new-tokens", "2")  # fmt: skip
    assert code == 2
    assert "every task has fewer than 2 distinct answers" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_a_model_that_cannot_be_loaded_is_a_clear_error(prompts_file, tmp_path, capsys):
    assert _sample([str(tmp_path / "nothing")], prompts_file, tmp_path / "b") == 2
    assert f"{tmp_path / 'nothing'}: cannot load the model" in capsys.readouterr().err


def test_import_candidates_fills_sources_and_refuses_bad_rows(tmp_path, capsys):
    f = tmp_path / "mine.jsonl"
    rows = [
        {"task_id": "a", "prompt": "Hi?", "candidates": [
            {"id": "1", "text": "x"}, {"id": "2", "text": "y", "source": "gpt"}]},
    ]  # fmt: skip
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["label", "import-candidates", str(f), "--out", str(tmp_path / "b")]) == 0
    (task,) = read_tasks(str(tmp_path / "b"))
    assert [c.source for c in task.candidates] == ["mine.jsonl", "gpt"]
    assert storage.read_manifest(tmp_path / "b")["imported_from"] == str(f)
    rows.append({"task_id": "b", "prompt": "Hi?", "candidates": [{"id": "1", "text": "x"}]})
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["label", "import-candidates", str(f), "--out", str(tmp_path / "c")]) == 2
    assert "mine.jsonl: line 2: field 'candidates'" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
