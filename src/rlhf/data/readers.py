"""Read raw rows from the files prepare accepts: JSONL, CSV, Parquet and folders written by
``datasets.save_to_disk`` (a Dataset or a DatasetDict, every split), local or ``s3://``.

Each reader yields ``(Location, dict)`` pairs; the location is what error messages cite (``line 7``
in text files, ``row 7`` or ``split train row 7`` otherwise). Rows come out as the file holds
them: checking them against a data format is :mod:`rlhf.data.formats`' job.

A row that cannot even be read (bytes that are not UTF-8, invalid JSON, a JSON value that is not
an object, a bad JSON cell in a CSV) raises :class:`DataError`, or is handed to ``on_error`` and
skipped when the caller wants to carry on past bad rows.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from rlhf import storage
from rlhf.data.errors import DataError, Location, json_type_name

Row = tuple[Location, dict[str, Any]]
ErrorHandler = Callable[[DataError], None]

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet", ".pq")

# CSV cells are text; these columns hold JSON (lists of messages, responses, numbers).
CSV_JSON_COLUMNS = frozenset({"messages", "responses", "scores", "ranks"})
# Text in some formats, a message list in others: a cell holding a JSON array of objects is read
# as a message list, anything else stays text.
CSV_MESSAGE_OR_TEXT_COLUMNS = frozenset({"prompt", "chosen", "rejected", "response", "completion"})
CSV_NUMBER_COLUMNS = frozenset({"margin"})
# An empty CSV cell cannot say "absent" any other way; for optional columns it means just that.
CSV_OPTIONAL_COLUMNS = frozenset({"margin", "reference", "scores", "ranks"})


def read_rows(uri: str, on_error: ErrorHandler | None = None) -> Iterator[Row]:
    """Yield ``(location, row)`` for every row of the file or folder at ``uri``.

    Problems with the file as a whole (missing, unsupported type, unreadable) always raise;
    problems with one row raise unless ``on_error`` is given, which then receives the error."""
    name = str(uri)
    path = storage.local_path(uri)
    if path.is_dir():
        return _read_saved_dataset(path, name)
    if not path.exists():
        raise DataError(name, "no such file or folder")
    suffix, compressed = _suffix(path)
    if suffix in JSONL_SUFFIXES:
        return _read_jsonl(path, name, compressed, on_error)
    if suffix in CSV_SUFFIXES:
        return _read_csv(path, name, compressed, on_error)
    if suffix in PARQUET_SUFFIXES and not compressed:
        return _read_parquet(path, name)
    raise DataError(
        name,
        f"unsupported file type {''.join(path.suffixes) or '(none)'!r}; expected .jsonl (or "
        ".ndjson/.json, optionally .gz), .csv (optionally .gz), .parquet, or a folder written "
        "by datasets.save_to_disk",
    )


def _suffix(path: Path) -> tuple[str, bool]:
    """``data.jsonl.gz`` -> ``(".jsonl", True)``."""
    name = path.name.lower()
    compressed = name.endswith(".gz")
    if compressed:
        name = name[: -len(".gz")]
    return Path(name).suffix, compressed


def _open_binary(path: Path, compressed: bool) -> IO[bytes]:
    return gzip.open(path, "rb") if compressed else open(path, "rb")  # noqa: SIM115


def _report(error: DataError, on_error: ErrorHandler | None) -> None:
    if on_error is None:
        raise error
    on_error(error)


def _decode(raw: bytes, name: str, location: Location) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            name,
            f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})",
            location,
        ) from None
    # A byte-order mark (Excel, Notepad) is an encoding artefact, not part of the first key.
    return text[1:] if location.number == 1 and text.startswith("\ufeff") else text


# --- JSONL -------------------------------------------------------------------------------------


def _read_jsonl(
    path: Path, name: str, compressed: bool, on_error: ErrorHandler | None
) -> Iterator[Row]:
    with _open_binary(path, compressed) as f:
        for number, raw in enumerate(f, start=1):
            location = Location(number, "line")
            try:
                text = _decode(raw, name, location)
                if not text.strip():
                    continue  # blank lines (often a trailing one) carry nothing
                row = _parse_object(text, name, location)
            except DataError as error:
                _report(error, on_error)
                continue
            yield location, row


def _parse_object(text: str, name: str, location: Location) -> dict[str, Any]:
    # A whole-file JSON array is the usual mistake; say so rather than "invalid JSON".
    hint = ""
    if location.number == 1 and text.lstrip().startswith("["):
        hint = " (a JSON array is not JSONL: write one JSON object per line)"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(
            name, f"invalid JSON: {e.msg} at column {e.colno}{hint}", location
        ) from None
    if not isinstance(value, dict):
        raise DataError(
            name, f"expected a JSON object, got {json_type_name(value)}{hint}", location
        )
    return value


# --- CSV ---------------------------------------------------------------------------------------


def _read_csv(
    path: Path, name: str, compressed: bool, on_error: ErrorHandler | None
) -> Iterator[Row]:
    # Long answers exceed the csv module's default cell limit of 128 KiB.
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
    with _open_binary(path, compressed) as f:
        reader = csv.reader(_decoded_lines(f, name, on_error))
        header = _next_record(reader, name)
        if header is None:
            return
        columns = [c.strip() for c in header]
        start = reader.line_num + 1  # a record's first physical line (cells may span lines)
        while True:
            try:
                cells = _next_record(reader, name)
            except DataError as error:
                _report(error, on_error)
                start = reader.line_num + 1
                continue
            if cells is None:
                return
            location = Location(start, "line")
            start = reader.line_num + 1
            if not cells:
                continue  # a blank line
            try:
                row = _csv_row(columns, cells, name, location)
            except DataError as error:
                _report(error, on_error)
                continue
            yield location, row


def _decoded_lines(f: Iterable[bytes], name: str, on_error: ErrorHandler | None) -> Iterator[str]:
    for number, raw in enumerate(f, start=1):
        try:
            yield _decode(raw, name, Location(number, "line"))
        except DataError as error:
            _report(error, on_error)
            yield "\n"  # keeps the reader's line count equal to the file's


def _next_record(reader: Any, name: str) -> list[str] | None:
    try:
        return next(reader)
    except StopIteration:
        return None
    except csv.Error as e:
        raise DataError(name, f"malformed CSV: {e}", Location(reader.line_num, "line")) from None


def _csv_row(columns: list[str], cells: list[str], name: str, location: Location) -> dict[str, Any]:
    if len(cells) > len(columns):
        raise DataError(
            name, f"has {len(cells)} cells but the header has {len(columns)} columns", location
        )
    row: dict[str, Any] = {}
    # A short record leaves its last columns absent.
    for column, cell in zip(columns, cells, strict=False):
        if column in CSV_OPTIONAL_COLUMNS and not cell.strip():
            continue
        row[column] = _csv_cell(column, cell, name, location)
    return row


def _csv_cell(column: str, cell: str, name: str, location: Location) -> Any:
    if column in CSV_JSON_COLUMNS and cell.strip():
        try:
            return json.loads(cell)
        except json.JSONDecodeError as e:
            raise DataError(
                name, f"invalid JSON in CSV cell: {e.msg} at column {e.colno}", location, column
            ) from None
    if column in CSV_MESSAGE_OR_TEXT_COLUMNS and cell.lstrip().startswith("["):
        try:
            value = json.loads(cell)
        except json.JSONDecodeError:
            return cell
        is_messages = isinstance(value, list) and value and all(isinstance(m, dict) for m in value)
        return value if is_messages else cell
    if column in CSV_NUMBER_COLUMNS:
        try:
            return float(cell)
        except ValueError:
            return cell  # the format check reports it with the field's rules
    return cell


# --- Parquet -----------------------------------------------------------------------------------


def _read_parquet(path: Path, name: str) -> Iterator[Row]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    number = 0
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                number += 1
                yield Location(number), row
    except (pa.ArrowException, OSError) as e:
        raise DataError(name, f"cannot read Parquet: {e}", Location(number + 1)) from None


# --- datasets.save_to_disk folders -------------------------------------------------------------


def _read_saved_dataset(path: Path, name: str) -> Iterator[Row]:
    if not ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
        raise DataError(
            name,
            "folder is not a datasets.save_to_disk folder (no dataset_dict.json or state.json)",
        )
    return _iter_saved_dataset(path)


def _iter_saved_dataset(path: Path) -> Iterator[Row]:
    import datasets

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        for split, dataset in loaded.items():
            for number, row in enumerate(dataset, start=1):
                yield Location(number, "row", split), row
    else:
        for number, row in enumerate(loaded, start=1):
            yield Location(number), row
