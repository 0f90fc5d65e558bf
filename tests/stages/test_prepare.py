"""The prepare stage end to end: inputs of every kind in, five loadable artifacts out."""

from __future__ import annotations

import json

import datasets
import pandas as pd
import pytest

from rlhf import storage
from rlhf.config import PrepareConfig
from rlhf.data.errors import DataError
from rlhf.data.formats import SCHEMAS
from rlhf.data.rows import content_sha256
from rlhf.data.splits import split_indices
from rlhf.stages.prepare import PrepareInputs, PrepareOutputs, run
from rlhf.stages.specs import ARTIFACTS
from rlhf.tracking import Tracker


def user(text):
    return {"role": "user", "content": text}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def prepare(tmp_path, config=None, **inputs):
    outputs = PrepareOutputs.in_folder(tmp_path / "out")
    metrics = run(config or PrepareConfig(), PrepareInputs(**inputs), outputs)
    return metrics, outputs


def load(outputs, artifact):
    return datasets.load_from_disk(getattr(outputs, artifact))


def all_rows(dataset_dict):
    return [row for split in dataset_dict for row in dataset_dict[split]]


def numbered_sft(n, prefix="p"):
    return [{"prompt": f"{prefix}{i}", "response": f"answer {i}"} for i in range(n)]


# --- the whole stage ---------------------------------------------------------------------------


def test_every_file_type_and_format_into_loadable_artifacts(tmp_path):
    sft_jsonl = write_jsonl(tmp_path / "sft.jsonl", numbered_sft(3))
    sft_csv = tmp_path / "chat.csv"
    pd.DataFrame(
        {"messages": [json.dumps([user("hi"), {"role": "assistant", "content": "hello"}])]}
    ).to_csv(sft_csv, index=False)
    ranking = tmp_path / "ranking.parquet"
    pd.DataFrame({"prompt": ["rank me"], "responses": [["a", "b", "c"]]}).to_parquet(ranking)
    hh = write_jsonl(
        tmp_path / "hh.jsonl",
        [
            {
                "chosen": "\n\nHuman: q\n\nAssistant: good",
                "rejected": "\n\nHuman: q\n\nAssistant: bad",
            }
        ],
    )
    prompts_dir = tmp_path / "prompts_ds"
    datasets.DatasetDict(
        train=datasets.Dataset.from_list([{"prompt": f"prompt {i}"} for i in range(8)]),
        test=datasets.Dataset.from_list([{"prompt": "prompt 9"}]),
    ).save_to_disk(str(prompts_dir))
    evals = write_jsonl(
        tmp_path / "eval.jsonl", [{"prompt": "e", "reference": "ref"}, {"prompt": "f"}]
    )

    metrics, outputs = prepare(
        tmp_path,
        sft=[sft_jsonl, str(sft_csv)],
        preferences=[str(ranking), hh],
        prompts=[str(prompts_dir)],
        eval_prompts=[evals],
    )

    for artifact in ARTIFACTS:
        data = load(outputs, artifact)
        assert list(data) == (["test"] if artifact == "eval_prompts" else ["train", "validation"])
        assert all(data[s].features == SCHEMAS[artifact] for s in data)
    assert {json.dumps(r["messages"]) for r in all_rows(load(outputs, "sft"))} >= {
        json.dumps([user("hi"), {"role": "assistant", "content": "hello"}])
    }
    prefs = all_rows(load(outputs, "preferences"))
    assert sorted((r["chosen"], r["rejected"]) for r in prefs) == [
        ("a", "b"),
        ("a", "c"),
        ("b", "c"),
        ("good", "bad"),
    ]
    assert load(outputs, "eval_prompts")["test"].to_list() == [
        {"prompt": [user("e")], "reference": "ref"},
        {"prompt": [user("f")], "reference": None},
    ]
    assert metrics["sft/input_rows"] == 4
    assert metrics["sft/train_rows"] + metrics["sft/validation_rows"] == 4
    assert metrics["preferences/input_rows"] == 2  # one ranking row (3 pairs), one HH row
    assert metrics["preferences/train_rows"] + metrics["preferences/validation_rows"] == 4
    assert metrics["prompts/input_rows"] == 9
    assert metrics["eval_prompts/test_rows"] == 2
    assert (tmp_path / "out" / "rejects.jsonl").read_text() == ""


def test_manifest_records_counts_sources_schema_and_checksum(tmp_path):
    rows = [*numbered_sft(10), numbered_sft(1)[0]]
    source = write_jsonl(tmp_path / "sft.jsonl", rows)
    config = PrepareConfig(seed=3, validation_fraction=0.2)
    metrics, outputs = prepare(tmp_path, config, sft=[source])

    manifest = storage.read_manifest(outputs.sft)
    data = load(outputs, "sft")
    assert manifest["artifact"] == "sft"
    assert manifest["sources"] == [source]
    assert manifest["formats"] == {source: "prompt_response"}
    assert manifest["rows"] == {"train": len(data["train"]), "validation": len(data["validation"])}
    assert manifest["rows"] == {"train": 8, "validation": 2}
    assert manifest["duplicates_dropped"] == 1 == metrics["sft/duplicates_dropped"]
    assert (manifest["rejected"], manifest["over_budget_dropped"]) == (0, 0)
    assert manifest["over_budget_truncated"] == 0
    assert (manifest["seed"], manifest["validation_fraction"]) == (3, 0.2)
    assert datasets.Features.from_dict(manifest["schema"]) == SCHEMAS["sft"]
    reloaded = {split: data[split].to_list() for split in data}
    assert manifest["content_sha256"] == content_sha256(reloaded)
    listed = {f["path"] for f in manifest["files"]}
    assert "dataset_dict.json" in listed and "train/state.json" in listed
    # eval_prompts without files of its own is the prompts' validation split: here, empty.
    assert storage.read_manifest(outputs.eval_prompts)["derived_from"] == "prompts/validation"


def test_artifacts_without_inputs_are_written_empty_with_their_schema(tmp_path):
    metrics, outputs = prepare(tmp_path)
    for artifact in ARTIFACTS:
        data = load(outputs, artifact)
        assert all(len(data[s]) == 0 and data[s].features == SCHEMAS[artifact] for s in data)
        assert storage.read_manifest(getattr(outputs, artifact))["rows"]
    assert metrics["total/rejected"] == 0


def test_eval_prompts_default_to_the_prompts_validation_split(tmp_path):
    source = write_jsonl(
        tmp_path / "p.jsonl", [{"prompt": f"p{i}", "reference": "r"} for i in range(10)]
    )
    _, outputs = prepare(tmp_path, PrepareConfig(validation_fraction=0.3), prompts=[source])
    validation = load(outputs, "prompts")["validation"]["prompt"]
    assert len(validation) == 3
    evals = load(outputs, "eval_prompts")["test"]
    assert evals["prompt"] == validation
    assert evals["reference"] == [None] * 3
    assert "reference" not in load(outputs, "prompts")["train"].features


def test_an_empty_derived_eval_split_is_warned_about(tmp_path, caplog):
    source = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"p{i}"} for i in range(4)])
    with caplog.at_level("WARNING", logger="rlhf.prepare"):
        _, outputs = prepare(tmp_path, PrepareConfig(validation_fraction=0.0), prompts=[source])
    assert len(load(outputs, "eval_prompts")["test"]) == 0
    assert "validation split is empty (validation_fraction=0.0, 4 prompts)" in caplog.text


def test_existing_output_folders_are_replaced(tmp_path):
    (tmp_path / "out" / "sft").mkdir(parents=True)
    (tmp_path / "out" / "sft" / "stale.txt").write_text("old")
    _, outputs = prepare(tmp_path, sft=[write_jsonl(tmp_path / "s.jsonl", numbered_sft(2))])
    assert not (tmp_path / "out" / "sft" / "stale.txt").exists()
    assert len(all_rows(load(outputs, "sft"))) == 2


def test_tracker_gets_config_inputs_and_metrics(tmp_path):
    tracker = Tracker()
    source = write_jsonl(tmp_path / "s.jsonl", numbered_sft(4))
    metrics = run(
        PrepareConfig(seed=5),
        PrepareInputs(sft=[source]),
        PrepareOutputs.in_folder(tmp_path / "out"),
        tracker,
    )
    assert tracker.params["seed"] == 5 and tracker.params["inputs.sft"] == source
    assert tracker.metrics == [(None, metrics)]
    assert all(isinstance(v, float) for v in metrics.values())


# --- failures write nothing --------------------------------------------------------------------


def assert_nothing_written(tmp_path):
    out = tmp_path / "out"
    assert not out.exists() or list(out.iterdir()) == []


def test_bad_row_stops_the_run_and_writes_nothing(tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", numbered_sft(3))
    bad = write_jsonl(
        tmp_path / "prefs.jsonl",
        [{"prompt": "p", "chosen": "a", "rejected": "b"}] * 6
        + [{"prompt": "p", "chosen": "", "rejected": "b"}],
    )
    with pytest.raises(DataError) as info:
        prepare(tmp_path, sft=[good], preferences=[bad])
    assert str(info.value) == f"{bad}: line 7: field 'chosen': must be a non-empty string"
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            b'{"prompt": "a", "response": "b"}\n{"prompt": "caf\xe9", "response": "b"}\n',
            "line 2: not valid UTF-8",
        ),
        (b'{"prompt": "a", "response": "b"}\n{"prompt": \n', "line 2: invalid JSON"),
        (b'{"question": "a"}\n', "line 1: unknown format: keys seen ['question']"),
    ],
)
def test_unreadable_or_unknown_input_names_file_and_line(tmp_path, content, expected):
    path = tmp_path / "sft.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        prepare(tmp_path, sft=[str(path)])
    assert str(info.value).startswith(f"{path}: {expected}")
    assert_nothing_written(tmp_path)


def test_csv_missing_a_column_names_file_line_and_the_columns_it_has(tmp_path):
    path = tmp_path / "prefs.csv"
    path.write_text("prompt,chosen\np,a\n")
    with pytest.raises(DataError) as info:
        prepare(tmp_path, preferences=[str(path)])
    assert str(info.value).startswith(
        f"{path}: line 2: unknown format: keys seen ['chosen', 'prompt']; preferences accepts "
        "preference {prompt, chosen, rejected, margin?}"
    )
    with pytest.raises(DataError) as info:
        prepare(tmp_path, PrepareConfig(format="preference"), preferences=[str(path)])
    assert str(info.value) == f"{path}: line 2: field 'rejected': is missing"
    assert_nothing_written(tmp_path)


def test_failure_keeps_previous_outputs_and_leaves_no_partial_folder(tmp_path):
    _, outputs = prepare(tmp_path, sft=[write_jsonl(tmp_path / "a.jsonl", numbered_sft(2))])
    before = storage.read_manifest(outputs.sft)["content_sha256"]
    with pytest.raises(DataError):
        prepare(tmp_path, sft=[write_jsonl(tmp_path / "b.jsonl", [{"prompt": "p"}])])
    assert storage.read_manifest(outputs.sft)["content_sha256"] == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [*ARTIFACTS, "rejects.jsonl"]
    )


def test_config_errors_are_caught_before_reading(tmp_path):
    for fields in ({"over_budget": "cut"}, {"validation_fraction": 1.0}, {"format": "tsv"}):
        with pytest.raises(ValueError):
            prepare(tmp_path, PrepareConfig(**fields))
    assert_nothing_written(tmp_path)


# --- empty inputs and inputs that leave no row ------------------------------------------------


def snapshot(folder):
    """Every file under ``folder`` with its bytes (None when it does not exist)."""
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def empty_input(tmp_path, kind):
    path = tmp_path / kind
    if kind == "zero.jsonl":
        path.write_bytes(b"")
    elif kind == "blank.jsonl":
        path.write_bytes(b"\n\n")
    elif kind == "header.csv":
        path.write_bytes(b"prompt,response\n")
    elif kind == "zero.parquet":
        pd.DataFrame({"prompt": pd.Series([], dtype=str)}).to_parquet(path)
    elif kind == "zero_ds":
        datasets.Dataset.from_dict({"prompt": []}).save_to_disk(str(path))
    else:
        path.mkdir()
    return str(path)


@pytest.mark.parametrize(
    ("kind", "holds"),
    [
        ("zero.jsonl", "0 bytes"),
        ("blank.jsonl", "only blank lines"),
        ("header.csv", "a header line but no rows"),
        ("zero.parquet", "columns prompt but 0 rows"),
        ("zero_ds", "a saved dataset with 0 rows"),
        ("empty_folder", "a folder with nothing in it"),
    ],
)
def test_an_empty_input_is_an_error_naming_it_and_writes_nothing(tmp_path, kind, holds):
    source = empty_input(tmp_path, kind)
    good = write_jsonl(tmp_path / "good.jsonl", numbered_sft(3))
    # skip_invalid skips bad rows, not an empty file.
    with pytest.raises(DataError) as info:
        prepare(tmp_path, PrepareConfig(skip_invalid=True), sft=[good], prompts=[source])
    assert str(info.value) == (
        f"{source}: is empty ({holds}): there is nothing to prepare from it (set "
        "allow_empty=true to accept an empty input)"
    )
    assert_nothing_written(tmp_path)


def test_allow_empty_accepts_an_empty_input(tmp_path, caplog):
    source = empty_input(tmp_path, "zero.jsonl")
    good = write_jsonl(tmp_path / "good.jsonl", numbered_sft(3))
    config = PrepareConfig(allow_empty=True)
    metrics, outputs = prepare(tmp_path, config, sft=[good], prompts=[source])
    assert metrics["prompts/input_rows"] == 0 and metrics["sft/input_rows"] == 3
    assert all_rows(load(outputs, "prompts")) == []
    assert storage.read_manifest(outputs.prompts)["formats"] == {source: None}
    assert f"{source} is empty (0 bytes); allow_empty is set" in caplog.text


PREFS = [
    {"prompt": "p", "chosen": "a", "rejected": "a"},  # line 1: identical answers
    {"prompt": "q", "chosen": "b"},  # line 2: no rejected
]


@pytest.mark.parametrize(
    ("config", "rows", "why"),
    [
        (
            PrepareConfig(skip_invalid=True),
            PREFS,
            "no preferences row is left of the 2 read: 2 rejected as invalid (skip_invalid); the "
            "first: {src}: line 1: field 'rejected': is identical to 'chosen'; a preference "
            "needs two different answers (allow_empty=true would write it empty)",
        ),
        (
            PrepareConfig(max_tokens=3),
            [{"prompt": "p", "chosen": "long", "rejected": "b"}] * 2,
            "no preferences row is left of the 2 read: 1 dropped as duplicates (dedupe); 1 "
            "dropped as over the budget of max_tokens=3 UTF-8 bytes (raise max_tokens or set "
            "over_budget=truncate) (allow_empty=true would write it empty)",
        ),
        (
            PrepareConfig(),
            [{"prompt": "p", "responses": ["a", "b"], "scores": [1, 1]}],
            "no preferences row is left of the 1 read: 1 valid ranking(s) gave no pair (all "
            "their responses tie) (allow_empty=true would write it empty)",
        ),
    ],
)
def test_inputs_that_leave_no_row_are_an_error_saying_why(tmp_path, config, rows, why):
    src = write_jsonl(tmp_path / "prefs.jsonl", rows)
    with pytest.raises(DataError) as info:
        prepare(tmp_path, config, preferences=[src])
    assert str(info.value) == f"{src}: " + why.format(src=src)
    assert_nothing_written(tmp_path)


def test_no_row_left_with_allow_empty_writes_an_empty_artifact(tmp_path, caplog):
    src = write_jsonl(tmp_path / "prefs.jsonl", PREFS)
    metrics, outputs = prepare(
        tmp_path, PrepareConfig(skip_invalid=True, allow_empty=True), preferences=[src]
    )
    assert metrics["preferences/rejected"] == 2 and all_rows(load(outputs, "preferences")) == []
    assert "no preferences row is left of the 2 read" in caplog.text


def test_empty_input_keeps_earlier_outputs_and_published_copies(tmp_path):
    published = tmp_path / "published"
    config = PrepareConfig(publish_to=str(published), skip_invalid=True)
    prepare(tmp_path, config, sft=[write_jsonl(tmp_path / "a.jsonl", numbered_sft(2))])
    before = snapshot(tmp_path / "out"), snapshot(published)
    assert before[0] and before[1]
    for sources in (
        [empty_input(tmp_path, "zero.jsonl")],
        [write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "p"}])],  # every row rejected
    ):
        with pytest.raises(DataError):
            prepare(tmp_path, config, sft=sources)
        assert (snapshot(tmp_path / "out"), snapshot(published)) == before
    # A first run that fails publishes nothing either.
    with pytest.raises(DataError):
        prepare(tmp_path / "fresh", PrepareConfig(publish_to=str(tmp_path / "p2")), sft=sources)
    assert snapshot(tmp_path / "fresh" / "out") is None and snapshot(tmp_path / "p2") is None


def test_a_row_of_another_format_says_so_end_to_end(tmp_path):
    src = write_jsonl(
        tmp_path / "prefs.jsonl",
        [{"prompt": "p", "chosen": "a", "rejected": "b"}, {"chosen": "x y", "rejected": "x z"}],
    )
    with pytest.raises(DataError) as info:
        prepare(tmp_path, preferences=[src])
    assert str(info.value).startswith(
        f"{src}: line 2: looks like format implicit_preference {{chosen, rejected}} while the "
        "file was detected as format preference {prompt, chosen, rejected, margin?} from its "
        "first row (line 1); they differ in 'prompt' (absent here, a string on line 1)"
    )
    # A forced format is the user's word: the row just breaks it.
    with pytest.raises(DataError) as info:
        prepare(tmp_path, PrepareConfig(format="preference"), preferences=[src])
    assert str(info.value) == f"{src}: line 2: field 'prompt': is missing"


# --- skip_invalid ------------------------------------------------------------------------------


def test_skip_invalid_drops_counts_and_lists_bad_rows(tmp_path):
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_bytes(
        b'{"prompt": "p", "chosen": "a", "rejected": "b"}\n'
        b'{"prompt": "p", "chosen": "a", "rejected": "a"}\n'
        b"{broken\n"
        b'{"prompt": "p", "chosen": "\xff", "rejected": "b"}\n'
        b'{"prompt": "q", "chosen": "c", "rejected": "d", "margin": "high"}\n'
        b'{"prompt": "r", "chosen": "e", "rejected": "f"}\n'
    )
    metrics, outputs = prepare(tmp_path, PrepareConfig(skip_invalid=True), preferences=[str(prefs)])

    rejects = [
        json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()
    ]
    assert [(r["file"], r["row"], r["field"]) for r in rejects] == [
        (str(prefs), 2, "rejected"),
        (str(prefs), 3, None),
        (str(prefs), 4, None),
        (str(prefs), 5, "margin"),
    ]
    assert rejects[0]["error"] == (
        f"{prefs}: line 2: field 'rejected': is identical to 'chosen'; a preference needs two "
        "different answers"
    )
    assert metrics["preferences/rejected"] == 4 == metrics["total/rejected"]
    assert metrics["preferences/input_rows"] == 6
    assert len(all_rows(load(outputs, "preferences"))) == 2
    assert storage.read_manifest(outputs.preferences)["rejected"] == 4


def test_skip_invalid_detects_the_format_from_the_first_good_row(tmp_path):
    source = write_jsonl(tmp_path / "s.jsonl", [{"junk": 1}, *numbered_sft(2)])
    metrics, outputs = prepare(tmp_path, PrepareConfig(skip_invalid=True), sft=[source])
    assert metrics["sft/rejected"] == 1
    assert storage.read_manifest(outputs.sft)["formats"] == {source: "prompt_response"}


# --- forced format, dedupe, split --------------------------------------------------------------


def test_forced_format_applies_to_the_artifacts_that_accept_it(tmp_path):
    prefs = write_jsonl(
        tmp_path / "p.jsonl",
        [{"prompt": "ignored", "chosen": "Q: x? A: yes", "rejected": "Q: x? A: no"}],
    )
    sft = write_jsonl(tmp_path / "s.jsonl", numbered_sft(1))
    config = PrepareConfig(format="implicit_preference")
    _, outputs = prepare(tmp_path, config, preferences=[prefs], sft=[sft])
    assert all_rows(load(outputs, "preferences")) == [
        {"prompt": [user("Q: x? A:")], "chosen": "yes", "rejected": "no", "margin": None}
    ]
    assert storage.read_manifest(outputs.sft)["formats"] == {sft: "prompt_response"}


def test_contradicting_pairs_are_kept_counted_and_reported(tmp_path, caplog):
    def pair(prompt, chosen, rejected, **extra):
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected, **extra}

    first = write_jsonl(
        tmp_path / "labeller1.jsonl",
        [pair("p", "A", "B"), pair("p", "C", "D"), pair("q", "A", "B"), pair("r", "E", "F")],
    )
    second = write_jsonl(
        tmp_path / "labeller2.jsonl",
        [
            pair("p", "B", "A", margin=2.0),  # contradicts p's A > B (its margin aside)
            pair("p", "A", "B"),  # a duplicate of labeller 1's: dropped, not counted
            pair("q", "A", "C"),  # other answers: no contradiction
            pair("s", "F", "E"),  # the same answers as r's, under another prompt
        ],
    )
    with caplog.at_level("WARNING", logger="rlhf.prepare"):
        metrics, outputs = prepare(tmp_path, preferences=[first, second])
    assert metrics["preferences/duplicates_dropped"] == 1
    assert metrics["preferences/contradicting_pairs"] == 2  # p's A > B and p's B > A
    assert storage.read_manifest(outputs.preferences)["contradicting_pairs"] == 2
    assert len(all_rows(load(outputs, "preferences"))) == 7  # both kept
    assert "2 of the 7 pairs kept have a pair with the same prompt and answers" in caplog.text

    # Without dedupe the repeated A > B is kept, and it contradicts B > A too.
    metrics, _ = prepare(tmp_path, PrepareConfig(dedupe=False), preferences=[first, second])
    assert metrics["preferences/contradicting_pairs"] == 3
    _, outputs = prepare(tmp_path, preferences=[first])
    assert storage.read_manifest(outputs.preferences)["contradicting_pairs"] == 0


def test_dedupe_across_files_and_can_be_turned_off(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", numbered_sft(3))
    b = write_jsonl(tmp_path / "b.jsonl", numbered_sft(2))
    metrics, _ = prepare(tmp_path, sft=[a, b])
    assert metrics["sft/duplicates_dropped"] == 2
    assert metrics["sft/train_rows"] + metrics["sft/validation_rows"] == 3
    metrics, _ = prepare(tmp_path, PrepareConfig(dedupe=False), sft=[a, b])
    assert metrics["sft/duplicates_dropped"] == 0
    assert metrics["sft/train_rows"] + metrics["sft/validation_rows"] == 5


def test_seeded_split_is_reproducible(tmp_path):
    source = write_jsonl(tmp_path / "s.jsonl", numbered_sft(40))

    def split_with(seed, name):
        outputs = PrepareOutputs.in_folder(tmp_path / name)
        run(
            PrepareConfig(seed=seed, validation_fraction=0.25), PrepareInputs(sft=[source]), outputs
        )
        data = datasets.load_from_disk(outputs.sft)
        return data["train"].to_list(), data["validation"].to_list()

    first, again, other = split_with(0, "a"), split_with(0, "b"), split_with(1, "c")
    assert first == again
    assert first != other
    assert len(first[1]) == 10


def test_split_keeps_rows_of_one_prompt_together_and_has_a_validation_row():
    keys = ["a", "a", "a", "b", "b", "c", "d", "e", "f", "g"]
    for seed in range(20):
        train, validation = split_indices(keys, 0.2, seed)
        assert sorted(train + validation) == list(range(10))
        assert not {keys[i] for i in train} & {keys[i] for i in validation}
        assert 1 <= len(validation) <= 2
    assert [len(s) for s in split_indices(["x", "y"], 0.1, 0)] == [1, 1]
    assert [len(s) for s in split_indices(["x", "x", "x"], 0.5, 0)] == [1, 2]  # one prompt
    assert [len(s) for s in split_indices(["x", "y"], 0.0, 0)] == [2, 0]
    assert [len(s) for s in split_indices(["x"], 0.5, 0)] == [1, 0]


# --- token budget ------------------------------------------------------------------------------


def test_over_budget_rows_are_dropped_and_counted(tmp_path):
    rows = [
        {"prompt": "12345", "response": "12345"},  # 10 bytes: fits
        {"prompt": "12345", "response": "123456"},  # 11 bytes: over
    ]
    metrics, outputs = prepare(
        tmp_path, PrepareConfig(max_tokens=10), sft=[write_jsonl(tmp_path / "s.jsonl", rows)]
    )
    assert metrics["sft/over_budget_dropped"] == 1 == metrics["total/over_budget_dropped"]
    assert metrics["sft/tokens_max"] == 10
    assert len(all_rows(load(outputs, "sft"))) == 1


def test_truncate_cuts_answers_to_fit_and_drops_what_cannot_be_saved(tmp_path):
    prefs = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"prompt": "abcd", "chosen": "fits", "rejected": "nope"},  # 8 bytes
            {"prompt": "abcd", "chosen": "long answer", "rejected": "ok"},  # truncated
            {
                "prompt": "abcd",
                "chosen": "same start X",
                "rejected": "same start Y",
            },  # equal after cut
            {"prompt": "a prompt over budget", "chosen": "x", "rejected": "y"},  # prompt alone
        ],
    )
    prompts = write_jsonl(
        tmp_path / "q.jsonl", [{"prompt": "short"}, {"prompt": "far too long a prompt"}]
    )
    config = PrepareConfig(max_tokens=8, over_budget="truncate", validation_fraction=0)
    metrics, outputs = prepare(tmp_path, config, preferences=[prefs], prompts=[prompts])

    kept = load(outputs, "preferences")["train"].to_list()
    assert sorted((r["chosen"], r["rejected"]) for r in kept) == [("fits", "nope"), ("long", "ok")]
    assert metrics["preferences/over_budget_truncated"] == 1
    assert metrics["preferences/over_budget_dropped"] == 2
    assert metrics["prompts/over_budget_dropped"] == 1  # prompts are never truncated
    manifest = storage.read_manifest(outputs.preferences)
    assert (manifest["over_budget_truncated"], manifest["over_budget_dropped"]) == (1, 2)


def test_byte_budget_truncation_never_splits_a_character(tmp_path):
    rows = [{"prompt": "ab", "response": "ééé"}]  # é is 2 bytes
    config = PrepareConfig(max_tokens=5, over_budget="truncate", validation_fraction=0)
    _, outputs = prepare(tmp_path, config, sft=[write_jsonl(tmp_path / "s.jsonl", rows)])
    assert load(outputs, "sft")["train"][0]["messages"][-1]["content"] == "é"


def test_budget_counts_tokens_with_a_local_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [
        "the",
        "a",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "lazy",
        "dog",
        "what",
        "does",
        "say",
    ]
    core = Tokenizer(
        models.WordLevel({w: i for i, w in enumerate(["[UNK]", *words])}, unk_token="[UNK]")
    )
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]").save_pretrained(
        tmp_path / "tok"
    )

    rows = [
        {"prompt": "what does the fox say", "response": "the quick brown fox"},  # 5 + 4 tokens
        {
            "prompt": "what does the dog say",
            "response": "the quick brown fox jumps over the lazy dog",
        },
    ]
    config = PrepareConfig(
        tokenizer=str(tmp_path / "tok"), max_tokens=9, over_budget="truncate", validation_fraction=0
    )
    metrics, outputs = prepare(tmp_path, config, sft=[write_jsonl(tmp_path / "s.jsonl", rows)])
    answers = sorted(r["messages"][-1]["content"] for r in load(outputs, "sft")["train"])
    assert answers == ["the quick brown fox", "the quick brown fox"]  # the second cut at 4 tokens
    assert metrics["sft/over_budget_truncated"] == 1
    assert metrics["sft/duplicates_dropped"] == 0  # dedupe runs before the budget
    assert metrics["sft/tokens_max"] == 9


def test_unpaired_feedback_and_pairs_split_into_it(tmp_path):
    feedback = [
        {"prompt": "p1", "completion": "good", "label": True},
        {"prompt": [user("p2")], "completion": "bad", "label": False},
    ]
    pairs = [{"prompt": f"q{i}", "chosen": f"c{i}", "rejected": f"r{i}"} for i in range(10)]
    config = PrepareConfig(validation_fraction=0.2, unpaired_from_preferences=True)
    metrics, outputs = prepare(
        tmp_path, config,
        unpaired=[write_jsonl(tmp_path / "u.jsonl", feedback)],
        preferences=[write_jsonl(tmp_path / "p.jsonl", pairs)],
    )  # fmt: skip
    unpaired, preferences = load(outputs, "unpaired"), load(outputs, "preferences")
    assert unpaired["train"].features == SCHEMAS["unpaired"]
    # Each pair gives a chosen (true) and a rejected (false) row in the pair's own split, after
    # the feedback file's rows: 2 + 2 * 10 rows in all.
    for split in ("train", "validation"):
        pair_prompts = {p[0]["content"] for p in preferences[split]["prompt"]}
        derived = [r for r in unpaired[split] if r["prompt"][0]["content"] in pair_prompts]
        assert len(derived) == 2 * len(preferences[split])
        assert {(r["completion"][0], r["label"]) for r in derived} == {("c", True), ("r", False)}
    assert metrics["unpaired/train_rows"] + metrics["unpaired/validation_rows"] == 22
    manifest = storage.read_manifest(outputs.unpaired)
    assert manifest["from_preferences"] == 20
    assert manifest["derived_from"] == "files and preferences"


def test_unpaired_from_preferences_without_pairs_is_an_error(tmp_path):
    feedback = [{"prompt": "p", "completion": "a", "label": True}]
    with pytest.raises(DataError, match="no preference pairs to split"):
        prepare(tmp_path, PrepareConfig(unpaired_from_preferences=True),
                unpaired=[write_jsonl(tmp_path / "u.jsonl", feedback)])  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_a_bad_label_names_file_line_and_field(tmp_path):
    rows = [{"prompt": "p", "completion": "a", "label": True},
            {"prompt": "p", "completion": "b", "label": "yes"}]  # fmt: skip
    with pytest.raises(DataError) as info:
        prepare(tmp_path, unpaired=[write_jsonl(tmp_path / "u.jsonl", rows)])
    assert (info.value.row, info.value.field) == (2, "label")
    assert "JSON boolean" in str(info.value) and "u.jsonl" in str(info.value)
