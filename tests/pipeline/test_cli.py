"""The command line: exit codes and messages a person sees, and the files it writes."""

import json

import datasets

from rlhf.cli import main


def test_demo_data_then_prepare(tmp_path, capsys):
    assert main(["demo-data", "--out", str(tmp_path / "demo"), "--set", "sft_rows=50",
                 "--set", "preference_rows=40", "--set", "prompt_rows=20",
                 "--set", "eval_prompt_rows=10"]) == 0  # fmt: skip
    files = {p.name for p in (tmp_path / "demo").iterdir()}
    assert files == {"sft.jsonl", "preferences.jsonl", "prompts.jsonl", "eval_prompts.jsonl"}
    demo = tmp_path / "demo"
    code = main(["prepare", "--no-track", "--sft", str(demo / "sft.jsonl"),
                 "--preferences", str(demo / "preferences.jsonl"),
                 "--prompts", str(demo / "prompts.jsonl"),
                 "--eval-prompts", str(demo / "eval_prompts.jsonl"),
                 "--out", str(tmp_path / "out")])  # fmt: skip
    assert code == 0
    prefs = datasets.load_from_disk(str(tmp_path / "out" / "preferences"))
    assert len(prefs["train"]) + len(prefs["validation"]) == 40
    printed = capsys.readouterr()
    assert '"preferences/train_rows"' in printed.out  # the metrics, as JSON on stdout
    # A stage command's console lines go to stderr: its start, then its summary.
    start = printed.err.index("==> prepare: validate, deduplicate and split the data\n")
    assert printed.err.index("<== prepare done in ", start)
    assert "preference pairs 36, prompts 18, eval prompts 10, rejected 0" in printed.err


def test_bad_row_exits_2_naming_file_line_and_field(tmp_path, capsys):
    bad = tmp_path / "prefs.jsonl"
    rows = [
        {"prompt": "p1", "chosen": "a", "rejected": "b"},
        {"prompt": "p2", "chosen": "a"},
    ]
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out"
    code = main(["prepare", "--no-track", "--preferences", str(bad), "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert f"{bad}: line 2: field 'rejected'" in err
    assert not out.exists() or not any(out.iterdir())  # nothing half-written

    code = main(
        ["prepare", "--no-track", "--preferences", str(bad), "--out", str(out), "--skip-invalid"]
    )
    assert code == 0
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert [(r["row"], r["field"]) for r in rejects] == [(2, "rejected")]


def test_unknown_config_field_is_a_clear_error(tmp_path, capsys):
    code = main(["sft", "--no-track", "--data", "x", "--out", str(tmp_path), "--set", "lr2=1"])
    assert code == 2
    assert "unknown field(s) ['lr2']" in capsys.readouterr().err


def test_compile_writes_pipeline_yaml(tmp_path, capsys):
    specs = tmp_path / "components"  # never the repository's own components/ (the default)
    assert main(["compile", "--out", str(tmp_path), "--components-out", str(specs)]) == 0
    assert (specs / "ppo_train.yaml").is_file()
    assert sorted(p.name for p in tmp_path.glob("*.yaml")) == ["dpo.yaml", "grpo.yaml", "ppo.yaml"]
    text = (tmp_path / "ppo.yaml").read_text()
    assert "supervised-finetune" in text and "train-reward-model" in text
    dpo = (tmp_path / "dpo.yaml").read_text()
    assert "dpo-train" in dpo and "train-reward-model" not in dpo
    assert "grpo-train" in (tmp_path / "grpo.yaml").read_text()


def test_stage_config_file_without_its_section_is_an_error(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epochs: 2\n")
    code = main(
        ["sft", "--no-track", "--data", "x", "--out", str(tmp_path / "m"), "--config", str(cfg)]
    )
    assert code == 2
    assert "no 'sft:' section" in capsys.readouterr().err
