"""The pieces that let prepare stream: digest dedupe, the array split, the on-disk reordering
and the shard writer, each checked against hand-worked values."""

from __future__ import annotations

import json

import datasets
import numpy as np
import pyarrow as pa

from rlhf.data import dataset_folder, row_spill
from rlhf.data.dataset_folder import DatasetDictWriter
from rlhf.data.formats import SCHEMAS
from rlhf.data.row_spill import DROPPED, FITS, TRUNCATED, RowSpill
from rlhf.data.rows import canonical_json, content_sha256, digest, first_occurrences, group_numbers
from rlhf.data.splits import split_indices


def digests(*texts):
    return b"".join(digest(t) for t in texts)


def test_dedupe_keeps_the_first_of_exact_repeats_only():
    # Key order does not matter once canonical; a float and an int margin are different values
    # in JSON text, as they were to the list dedupe; whitespace inside a text matters.
    rows = [
        {"prompt": "p", "chosen": "a", "margin": 1.0},
        {"margin": 1.0, "chosen": "a", "prompt": "p"},
        {"prompt": "p", "chosen": "a ", "margin": 1.0},
        {"prompt": "p", "chosen": "a", "margin": None},
        {"prompt": "p", "chosen": "a", "margin": 1.0},
    ]
    keep = first_occurrences(digests(*(canonical_json(r) for r in rows)))
    assert keep.tolist() == [True, False, True, True, False]
    assert first_occurrences(b"").tolist() == []


def test_groups_are_numbered_in_order_of_first_appearance():
    assert group_numbers(digests("b", "a", "b", "c", "a")).tolist() == [0, 1, 0, 2, 1]
    # The same digests as an (n, 16) array (how the split hands them over, no bytes copy).
    as_array = np.frombuffer(digests("b", "a", "b", "c", "a"), np.uint8).reshape(-1, 16)[[0, 1, 2]]
    assert group_numbers(as_array).tolist() == [0, 1, 0]


def test_split_is_the_same_as_the_list_version_gave():
    # Recorded from the list-based split_indices this replaced (same seed, same draws).
    keys = ["a", "a", "a", "b", "b", "c", "d", "e", "f", "g"]
    assert split_indices(keys, 0.2, 0) == ([4, 3, 2, 8, 1, 0, 9, 6], [5, 7])
    assert split_indices(keys, 0.2, 7) == ([2, 1, 5, 0, 4, 7, 6, 3], [8, 9])
    assert split_indices(["x", "x", "x"], 0.5, 0) == ([1], [2, 0])
    assert split_indices(["x", "y"], 0.0, 3) == ([1, 0], [])
    # Every group is bigger than the target: the smallest goes to validation whole.
    assert split_indices(["big"] * 5 + ["mid"] * 3, 0.1, 1) == ([2, 3, 1, 0, 4], [5, 7, 6])


def test_split_is_deterministic_and_keeps_prompts_together():
    keys = [str(i % 13) for i in range(200)]
    train, validation = split_indices(keys, 0.3, 5)
    assert (train, validation) == split_indices(keys, 0.3, 5)
    assert sorted(train + validation) == list(range(200))
    assert not {keys[i] for i in train} & {keys[i] for i in validation}
    assert split_indices(keys, 0.3, 6) != (train, validation)


def spill_of(tmp_path, lines, outcomes=None):
    spill = RowSpill(tmp_path / "rows.jsonl")
    for i, line in enumerate(lines):
        outcome = outcomes[i] if outcomes else FITS
        spill.add(digest(line), digest(line[:3]), i, outcome, line)
    spill.close()
    return spill


def test_selection_counts_budget_drops_after_dedupe(tmp_path):
    lines = ["a", "b", "a", "c", "c", "d"]
    spill = spill_of(tmp_path, lines, [FITS, DROPPED, FITS, TRUNCATED, TRUNCATED, DROPPED])
    # Only written rows reach the scratch file: a, a, c, c.
    assert (tmp_path / "rows.jsonl").read_text().split() == ["a", "a", "c", "c"]
    chosen = spill.select(dedupe=True)
    assert chosen.rows.tolist() == [0, 3]
    assert (chosen.duplicates, chosen.dropped, chosen.truncated) == (2, 2, 1)
    chosen = spill.select(dedupe=False)
    assert chosen.rows.tolist() == [0, 2, 3, 4]
    assert (chosen.duplicates, chosen.dropped, chosen.truncated) == (0, 2, 2)
    assert spill.row_tokens(np.array([3, 0])).tolist() == [3, 0]


def test_scatter_puts_rows_in_final_order_in_shards_of_bounded_size(tmp_path, monkeypatch):
    lines = [f"row{i:02d}" for i in range(10)]  # 6 bytes each with the line break
    spill = spill_of(tmp_path, lines, [FITS] * 8 + [DROPPED, FITS])
    monkeypatch.setattr(row_spill, "SHARD_BYTES", 18)  # three rows a shard
    splits = {"train": np.array([9, 3, 0, 7, 1, 2, 5]), "validation": np.array([6, 4])}
    shards = spill.scatter(splits, tmp_path)
    got = {s: [[x.decode() for x in shard.lines()] for shard in v] for s, v in shards.items()}
    assert got == {
        "train": [["row09", "row03", "row00"], ["row07", "row01", "row02"], ["row05"]],
        "validation": [["row06", "row04"]],
    }
    empty = spill.scatter({"train": np.array([0]), "validation": np.array([], np.int64)}, tmp_path)
    assert [list(shard.lines()) for shard in empty["validation"]] == [[]]


def test_writer_gives_a_loadable_dataset_dict_and_the_content_checksum(tmp_path):
    rows = [
        {"prompt": [{"role": "user", "content": "é\u2028"}], "chosen": "a", "rejected": "b",
         "margin": None},
        {"prompt": [{"role": "user", "content": "q"}], "chosen": "c", "rejected": "d",
         "margin": 2.5},
    ]  # fmt: skip
    lines = [canonical_json(r).encode() for r in rows]
    folder = tmp_path / "prefs"
    folder.mkdir()
    writer = DatasetDictWriter(folder, SCHEMAS["preferences"])
    writer.write_split("train", [lines[:1], lines[1:]])
    writer.write_split("validation", [[]])
    checksum = writer.finish()
    data = datasets.load_from_disk(str(folder))
    assert data["train"].to_list() == rows and len(data["validation"]) == 0
    assert data["train"].features == SCHEMAS["preferences"]
    assert writer.rows == {"train": 2, "validation": 0}
    assert checksum == content_sha256({"train": rows, "validation": []})
    state = json.loads((folder / "train" / "state.json").read_text())
    assert [f["filename"] for f in state["_data_files"]] == [
        "data-00000-of-00002.arrow",
        "data-00001-of-00002.arrow",
    ]


def test_writer_parses_a_shard_a_batch_at_a_time(tmp_path, monkeypatch):
    # Batches of 2 lines: a shard of 5 rows is parsed in three steps, written as one stream
    # whose record batches hold _BATCH_ROWS rows (here 2) as save_to_disk writes them.
    monkeypatch.setattr(dataset_folder, "_PARSE_ROWS", 2)
    monkeypatch.setattr(dataset_folder, "_BATCH_ROWS", 2)
    rows = [{"prompt": [{"role": "user", "content": f"q{i}"}]} for i in range(5)]
    folder = tmp_path / "prompts"
    folder.mkdir()
    writer = DatasetDictWriter(folder, SCHEMAS["prompts"])
    writer.write_split("train", [(canonical_json(r).encode() for r in rows)])  # a generator
    checksum = writer.finish()
    assert datasets.load_from_disk(str(folder))["train"].to_list() == rows
    assert checksum == content_sha256({"train": rows})
    with pa.ipc.open_stream(str(folder / "train" / "data-00000-of-00001.arrow")) as stream:
        assert [len(batch) for batch in stream] == [2, 2, 1]
