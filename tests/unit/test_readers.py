"""Readers: every file type, row locations as error messages cite them, unreadable rows."""

from __future__ import annotations

import gzip
import json

import datasets
import pandas as pd
import pytest

from rlhf.data.errors import DataError, EmptyInput, Location
from rlhf.data.readers import read_rows


def rows_of(path, **kwargs):
    return list(read_rows(str(path), **kwargs))


def write_lines(path, *lines: str | bytes):
    path.write_bytes(
        b"".join((ln if isinstance(ln, bytes) else ln.encode()) + b"\n" for ln in lines)
    )
    return path


# --- JSONL -------------------------------------------------------------------------------------


def test_jsonl_rows_with_line_numbers_and_blank_lines_skipped(tmp_path):
    path = write_lines(tmp_path / "a.jsonl", '{"prompt": "p1"}', "", "   ", '{"prompt": "p2"}')
    assert rows_of(path) == [
        (Location(1, "line"), {"prompt": "p1"}),
        (Location(4, "line"), {"prompt": "p2"}),
    ]
    assert str(Location(4, "line")) == "line 4"


def test_jsonl_byte_order_mark_and_gzip(tmp_path):
    path = tmp_path / "a.jsonl.gz"
    with gzip.open(path, "wb") as f:
        f.write(b'\xef\xbb\xbf{"prompt": "p"}\r\n{"prompt": "q"}\n')
    assert [row for _, row in rows_of(path)] == [{"prompt": "p"}, {"prompt": "q"}]


def test_jsonl_invalid_json_names_file_and_line(tmp_path):
    path = write_lines(tmp_path / "bad.jsonl", '{"prompt": "ok"}', '{"prompt": "no end"')
    with pytest.raises(DataError) as info:
        rows_of(path)
    assert str(info.value).startswith(f"{path}: line 2: invalid JSON")
    assert (info.value.file, info.value.row, info.value.field) == (str(path), 2, None)


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = write_lines(tmp_path / "a.jsonl", '{"prompt": "ok"}', '["a", "b"]')
    with pytest.raises(DataError, match=r"a\.jsonl: line 2: expected a JSON object, got list"):
        rows_of(path)


def test_jsonl_whole_file_array_gets_a_hint(tmp_path):
    path = write_lines(tmp_path / "a.jsonl", '[{"prompt": "p"},', '{"prompt": "q"}]')
    with pytest.raises(DataError, match="line 1: .*one JSON object per line"):
        rows_of(path)


def test_jsonl_pretty_printed_object_gets_a_hint(tmp_path):
    path = write_lines(tmp_path / "a.json", "{", '  "prompt": "p"', "}")
    with pytest.raises(DataError) as info:
        rows_of(path)
    assert str(info.value) == (
        f"{path}: line 1: invalid JSON: Expecting property name enclosed in double quotes at "
        "column 2 (an object spread over several lines is not JSONL: write one object per line)"
    )


def test_jsonl_non_utf8_names_file_and_line(tmp_path):
    path = write_lines(
        tmp_path / "latin1.jsonl", '{"prompt": "a"}', '{"prompt": "caf\xe9"}'.encode("latin-1")
    )
    with pytest.raises(DataError) as info:
        rows_of(path)
    assert str(info.value) == f"{path}: line 2: not valid UTF-8 (byte 0xe9 at column 16)"


def test_on_error_reports_bad_lines_and_reading_goes_on(tmp_path):
    path = write_lines(
        tmp_path / "a.jsonl", "{oops", b'{"prompt": "\xff"}', "7", '{"prompt": "ok"}'
    )
    errors: list[DataError] = []
    rows = rows_of(path, on_error=errors.append)
    assert rows == [(Location(4, "line"), {"prompt": "ok"})]
    assert [e.row for e in errors] == [1, 2, 3]


# --- CSV ---------------------------------------------------------------------------------------


def test_csv_line_numbers_count_the_header_and_multiline_cells(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text('prompt,response\n"two\nlines",r1\n\np3,r3\n', encoding="utf-8")
    assert rows_of(path) == [
        (Location(2, "line"), {"prompt": "two\nlines", "response": "r1"}),
        (Location(5, "line"), {"prompt": "p3", "response": "r3"}),
    ]


def test_csv_json_cells_numbers_and_empty_optional_cells(tmp_path):
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    frame = pd.DataFrame(
        {
            "prompt": ["p", "[not json, just text"],
            "responses": [json.dumps(["a", "b"]), json.dumps(["c", "d"])],
            "scores": [json.dumps([1, 2]), ""],
            "margin": ["0.5", ""],
            "chosen": [json.dumps(messages), "[1] plain text"],
        }
    )
    path = tmp_path / "a.csv"
    frame.to_csv(path, index=False)
    (_, first), (_, second) = rows_of(path)
    assert first == {
        "prompt": "p",
        "responses": ["a", "b"],
        "scores": [1, 2],
        "margin": 0.5,
        "chosen": messages,
    }
    # Empty optional cells are absent; text that merely starts with "[" stays text.
    assert second == {
        "prompt": "[not json, just text",
        "responses": ["c", "d"],
        "chosen": "[1] plain text",
    }


def test_csv_bad_json_cell_names_line_and_field(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text('prompt,responses\np,"[""a"", ""b"""\n', encoding="utf-8")
    with pytest.raises(DataError) as info:
        rows_of(path)
    assert str(info.value).startswith(
        f"{path}: line 2: field 'responses': invalid JSON in CSV cell"
    )


def test_csv_non_utf8_and_extra_cells(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes(b"prompt,response\np,r\np,caf\xe9\n")
    with pytest.raises(DataError, match=r"a\.csv: line 3: not valid UTF-8"):
        rows_of(path)
    path.write_text("prompt,response\np,r,extra\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 2: has 3 cells but the header has 2 columns"):
        rows_of(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"prompt,response,prompt\na,b,c\n", "line 1: the header repeats column 'prompt'"),
        (
            b"prompt;response\na;b\n",
            "line 1: the header has one column 'prompt;response': CSV files must be "
            "comma-separated",
        ),
        (b"\n\nprompt\tresponse\n", "line 3: the header has one column"),
    ],
)
def test_csv_header_that_would_lose_or_merge_columns(tmp_path, content, message):
    path = tmp_path / "x.csv"
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        rows_of(path, on_error=lambda e: None)  # a bad header is never one row to skip
    assert str(info.value).startswith(f"{path}: {message}")


def test_csv_blank_lines_before_the_header_are_skipped(tmp_path):
    path = write_lines(tmp_path / "x.csv", "", "prompt", "a")
    assert rows_of(path) == [(Location(3, "line"), {"prompt": "a"})]


def test_csv_on_error_skips_undecodable_line_and_keeps_numbering(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes(b"prompt\n\xff\nok\n")
    errors: list[DataError] = []
    assert rows_of(path, on_error=errors.append) == [(Location(3, "line"), {"prompt": "ok"})]
    assert [e.row for e in errors] == [2]


# --- Parquet and saved datasets ----------------------------------------------------------------


def test_parquet_rows_are_numbered_from_one(tmp_path):
    path = tmp_path / "a.parquet"
    pd.DataFrame({"prompt": ["a", "b"], "scores": [[1.0, 2.0], [3.0, 4.0]]}).to_parquet(path)
    assert rows_of(path) == [
        (Location(1), {"prompt": "a", "scores": [1.0, 2.0]}),
        (Location(2), {"prompt": "b", "scores": [3.0, 4.0]}),
    ]


def test_saved_dataset_and_dataset_dict_read_every_split(tmp_path):
    single = tmp_path / "single"
    datasets.Dataset.from_list([{"prompt": "a"}]).save_to_disk(str(single))
    assert rows_of(single) == [(Location(1), {"prompt": "a"})]

    both = tmp_path / "both"
    datasets.DatasetDict(
        train=datasets.Dataset.from_list([{"prompt": "a"}, {"prompt": "b"}]),
        test=datasets.Dataset.from_list([{"prompt": "c"}]),
    ).save_to_disk(str(both))
    rows = rows_of(both)
    assert [(str(loc), row["prompt"]) for loc, row in rows] == [
        ("split train row 1", "a"),
        ("split train row 2", "b"),
        ("split test row 1", "c"),
    ]


# --- file-level problems and s3:// ----------------------------------------------------------


def test_file_level_problems_always_raise(tmp_path):
    with pytest.raises(DataError, match=r"missing\.jsonl: no such file or folder"):
        read_rows(str(tmp_path / "missing.jsonl"), on_error=lambda e: None)
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(DataError, match=r"a\.txt: unsupported file type '\.txt'"):
        read_rows(str(tmp_path / "a.txt"))
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="not a datasets.save_to_disk folder"):
        read_rows(str(tmp_path / "folder"))
    (tmp_path / "data.jsonl.gz").write_bytes(b'{"prompt": "a"}\n')  # named .gz, not gzip
    with pytest.raises(DataError) as info:
        rows_of(tmp_path / "data.jsonl.gz", on_error=lambda e: None)
    assert str(info.value).startswith(f"{tmp_path / 'data.jsonl.gz'}: cannot read it as gzip: ")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "state.json").write_text("{}")
    with pytest.raises(DataError) as info:
        rows_of(tmp_path / "broken")
    assert str(info.value).startswith(f"{tmp_path / 'broken'}: cannot load the saved dataset: ")


# --- inputs with no rows -----------------------------------------------------------------------


def empty_inputs(tmp_path):
    """Each kind of input with no row, and what the error says it holds."""
    (tmp_path / "zero.jsonl").write_bytes(b"")
    (tmp_path / "blank.jsonl").write_bytes(b"\n  \n\n")
    (tmp_path / "zero.csv").write_bytes(b"")
    (tmp_path / "header.csv").write_bytes(b"prompt,response\n\n")
    with gzip.open(tmp_path / "zero.jsonl.gz", "wb"):
        pass
    pd.DataFrame({"prompt": pd.Series([], dtype=str)}).to_parquet(tmp_path / "zero.parquet")
    # Saved with default sharding an empty Dataset has no shard file at all.
    datasets.Dataset.from_dict({"prompt": []}).save_to_disk(str(tmp_path / "zero_ds"))
    datasets.DatasetDict(
        train=datasets.Dataset.from_dict({"prompt": []}),
        test=datasets.Dataset.from_dict({"prompt": []}),
    ).save_to_disk(str(tmp_path / "zero_dict"), num_shards={"train": 1, "test": 1})
    (tmp_path / "nothing").mkdir()
    return {
        "zero.jsonl": "is empty (0 bytes)",
        "blank.jsonl": "is empty (only blank lines)",
        "zero.csv": "is empty (0 bytes)",
        "header.csv": "is empty (a header line but no rows)",
        "zero.jsonl.gz": "is empty (0 bytes)",
        "zero.parquet": "is empty (columns prompt but 0 rows)",
        "zero_ds": "is empty (a saved dataset with 0 rows)",
        "zero_dict": "is empty (a saved dataset with 0 rows)",
        "nothing": "is empty (a folder with nothing in it)",
    }


def test_an_input_with_no_rows_raises_empty_input_naming_it(tmp_path):
    for name, message in empty_inputs(tmp_path).items():
        with pytest.raises(EmptyInput) as info:
            rows_of(tmp_path / name)
        assert str(info.value) == f"{tmp_path / name}: {message}"


def test_rows_that_cannot_be_read_are_not_an_empty_input(tmp_path):
    # Every row is bad, but there are rows: the caller hears about each one, not "empty".
    path = write_lines(tmp_path / "bad.jsonl", "{oops", "[1]")
    errors: list[DataError] = []
    assert rows_of(path, on_error=errors.append) == []
    assert [e.row for e in errors] == [1, 2]


def test_s3_uri_is_read_through_the_cache_and_named_in_errors(tmp_path, monkeypatch):
    moto = pytest.importorskip("moto")
    import boto3

    monkeypatch.setenv("RLHF_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with moto.mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="data")
        s3.put_object(Bucket="data", Key="p.jsonl", Body=b'{"prompt": "a"}\n{oops\n')
        errors: list[DataError] = []
        rows = rows_of("s3://data/p.jsonl", on_error=errors.append)
    assert rows == [(Location(1, "line"), {"prompt": "a"})]
    assert str(errors[0]).startswith("s3://data/p.jsonl: line 2: invalid JSON")
