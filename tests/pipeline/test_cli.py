"""The command line: exit codes and messages a person sees, and the files it writes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import yaml

import rlhf
from rlhf.cli import main
from rlhf.pipeline.pipelines import PIPELINE_NAME, PIPELINES

ROOT = Path(__file__).resolve().parents[2]

SRC = str(Path(rlhf.__file__).resolve().parents[1])  # this checkout's sources, for subprocesses


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


def msg(role, text):
    return {"role": role, "content": text}


@pytest.mark.parametrize(
    ("name", "rows", "expected"),
    [
        (
            "empty.jsonl",
            [],
            "is empty (0 bytes): there is nothing to prepare from it (set allow_empty=true to "
            "accept an empty input)",
        ),
        (
            "mixed.jsonl",
            [{"prompt": "p", "chosen": "a", "rejected": "b"}, {"chosen": "x y", "rejected": "x z"}],
            "line 2: looks like format implicit_preference {chosen, rejected} while the file was "
            "detected as format preference",
        ),
        (
            "chat.jsonl",
            [
                {
                    "chosen": [msg("user", "q"), msg("assistant", "a")],
                    "rejected": [msg("user", "q"), msg("assistant", "b"), msg("user", "ok")],
                }
            ],
            "line 1: field 'rejected': the rejected conversation ends with a 'user' turn; it "
            "must end with the assistant's answer",
        ),
        ("bad.jsonl", ['{"prompt": "p", "chosen": "a",'], "line 1: invalid JSON: Expecting"),
    ],
)
def test_bad_preferences_exit_2_with_one_line_naming_file_line_and_problem(
    tmp_path, capsys, name, rows, expected
):
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    out = tmp_path / "out"
    code = main(["prepare", "--no-track", "--preferences", str(path), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("rlhf prepare:")]
    assert len(errors) == 1
    assert errors[0].startswith(f"rlhf prepare: invalid data: {path}: {expected}")
    assert not out.exists()


def test_the_rlhf_command_reports_bad_data_in_one_line_without_a_traceback(tmp_path):
    path = tmp_path / "prefs.jsonl"
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "q", "chosen": 7}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "rlhf.cli", "prepare", "--no-track", "--preferences", str(path),
         "--out", str(out)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": SRC},
    )  # fmt: skip
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"rlhf prepare: invalid data: {path}: line 2: field 'chosen': must be a non-empty "
        "string, got number"
    )
    assert done.stdout == "" and not out.exists()


def test_a_stage_command_prints_its_lines_and_no_library_noise(prepared, tmp_path):
    """In a fresh process, as a user runs it: the start, progress and summary lines, and none of
    the libraries' chatter (DeepSpeed's accelerator warning when transformers saves the model,
    load reports, progress bars of other libraries)."""
    done = subprocess.run(
        [sys.executable, "-m", "rlhf.cli", "sft", "--no-track", "--data", prepared["sft"],
         "--out", str(tmp_path / "sft"), "--set", "base_model=preset:micro-llama",
         "--set", "max_steps=1", "--set", "eval_every=0"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert "==> sft: supervised fine-tuning" in output and "<== sft done in" in output
    for noise in ("[WARNING]", "Setting accelerator", "LOAD REPORT", "Loading weights", "it/s]"):
        assert noise not in output, noise


def test_allow_empty_from_the_command_line(tmp_path, capsys):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    code = main(["prepare", "--no-track", "--preferences", str(tmp_path / "empty.jsonl"),
                 "--out", str(tmp_path / "out"), "--set", "allow_empty=true"])  # fmt: skip
    assert code == 0
    assert datasets.load_from_disk(str(tmp_path / "out" / "preferences"))["train"].num_rows == 0


def test_unknown_config_field_is_a_clear_error(tmp_path, capsys):
    code = main(["sft", "--no-track", "--data", "x", "--out", str(tmp_path), "--set", "lr2=1"])
    assert code == 2
    assert "unknown field(s) ['lr2']" in capsys.readouterr().err


def test_compile_writes_pipeline_yaml(tmp_path, capsys):
    specs = tmp_path / "components"  # never the repository's own components/ (the default)
    assert main(["compile", "--out", str(tmp_path), "--components-out", str(specs)]) == 0
    assert (specs / "ppo.yaml").is_file()
    assert sorted(p.name for p in tmp_path.glob("*.yaml")) == [
        "collect.yaml", "dpo.yaml", "grpo.yaml", "kto.yaml", "online_dpo.yaml", "ppo.yaml"
    ]  # fmt: skip

    def tasks(name):
        package = yaml.safe_load((tmp_path / f"{name}.yaml").read_text().split("\n---\n")[0])
        return set(package["root"]["dag"]["tasks"])

    # condition-1: the optional deploy step, under its conditions (test_deploy_stage.py).
    assert tasks("ppo") == {"prepare", "sft", "reward", "ppo", "evaluate", "condition-1"}
    assert tasks("dpo") == {"prepare", "sft", "dpo", "evaluate", "condition-1"}
    assert tasks("grpo") == {"prepare", "sft", "reward", "grpo", "evaluate", "condition-1"}
    assert tasks("online_dpo") == {"prepare", "sft", "reward", "online-dpo", "evaluate",
                                   "condition-1"}  # fmt: skip
    assert tasks("kto") == {"prepare", "sft", "kto", "evaluate", "condition-1"}


def test_stage_config_file_without_its_section_is_an_error(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epochs: 2\n")
    code = main(
        ["sft", "--no-track", "--data", "x", "--out", str(tmp_path / "m"), "--config", str(cfg)]
    )
    assert code == 2
    assert "no 'sft:' section" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["run"], ["submit"], ["schedule", "create"]])
def test_pipeline_flag_offers_every_pipeline(command, capsys):
    """--pipeline takes the names of PIPELINES (read when needed, not at start-up); its help
    names each of them and the default pipeline."""
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"{', '.join(sorted(PIPELINES))} (default: {PIPELINE_NAME})" in help_text
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--pipeline", "nope"])
    assert exit_.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_building_the_parser_does_not_import_kfp():
    """Why --pipeline's names are read lazily: the stage commands and --help start without kfp."""
    script = (
        "import sys; from rlhf.cli import build_parser; build_parser(); print('kfp' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), *sys.path])}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "False"
