"""Read raw rows from the files prepare accepts: JSONL, CSV, Parquet and folders written by
``datasets.save_to_disk`` (a Dataset or a DatasetDict, every split), local or ``s3://``.

Each reader yields ``(Location, dict)`` pairs; the location is what error messages cite (``line 7``
in text files, ``row 7`` or ``split train row 7`` otherwise). Rows come out as the file holds
them: checking them against a data format is :mod:`rlhf.data.formats`' job.

A row that cannot even be read (bytes that are not UTF-8, invalid JSON, a JSON value that is not
an object, a bad JSON cell in a CSV) raises :class:`DataError`, or is handed to ``on_error`` and
skipped when the caller wants to carry on past bad rows. An input that holds no row at all (0
bytes, blank lines only, a CSV header alone, a Parquet file or saved dataset of 0 rows, an empty
folder) raises :class:`EmptyInput` once read to the end: whether that is acceptable is the
caller's call.
"""

from __future__ import annotations

import csv
import gzip
import json
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from rlhf import storage
from rlhf.data.errors import DataError, EmptyInput, Location, json_type_name

Row = tuple[Location, dict[str, Any]]
ErrorHandler = Callable[[DataError], None]
# A reader yields rows and, when done, returns what the input held if it yielded none
# ("0 bytes", "a header but no rows"): the words of the EmptyInput message.
Reader = Generator[Row, None, str]

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet", ".pq")

# CSV cells are text; these columns hold JSON (lists of messages, responses, numbers).
CSV_JSON_COLUMNS = frozenset({"messages", "responses", "scores", "ranks", "label"})
# Text in some formats, a message list in others: a cell holding a JSON array of objects is read
# as a message list, anything else stays text.
CSV_MESSAGE_OR_TEXT_COLUMNS = frozenset({"prompt", "chosen", "rejected", "response", "completion"})
CSV_NUMBER_COLUMNS = frozenset({"margin"})
# An empty CSV cell cannot say "absent" any other way; for optional columns it means just that.
CSV_OPTIONAL_COLUMNS = frozenset({"margin", "reference", "scores", "ranks"})


def read_rows(uri: str, on_error: ErrorHandler | None = None) -> Iterator[Row]:
    """Yield ``(location, row)`` for every row of the file or folder at ``uri``.

    Problems with the file as a whole (missing, unsupported type, unreadable) always raise;
    problems with one row raise unless ``on_error`` is given, which then receives the error.
    An input with no row at all, readable or not, raises :class:`EmptyInput` at its end."""
    name = str(uri)
    path = storage.local_path(uri)
    bad_rows = 0

    def count_bad(error: DataError) -> None:
        nonlocal bad_rows
        bad_rows += 1
        _report(error, on_error)

    if path.is_dir():
        return _non_empty(_read_saved_dataset(path, name), name, lambda: bad_rows)
    if not path.exists():
        raise DataError(name, "no such file or folder")
    suffix, compressed = _suffix(path)
    if suffix in JSONL_SUFFIXES:
        reader = _read_jsonl(path, name, compressed, count_bad)
    elif suffix in CSV_SUFFIXES:
        reader = _read_csv(path, name, compressed, count_bad)
    elif suffix in PARQUET_SUFFIXES and not compressed:
        reader = _read_parquet(path, name)
    else:
        raise _unsupported(path, name)
    return _non_empty(reader, name, lambda: bad_rows)


def _non_empty(reader: Reader, name: str, bad_rows: Callable[[], int]) -> Iterator[Row]:
    """``reader``'s rows; at the end, EmptyInput if it had neither good nor bad rows."""
    rows = 0
    while True:
        try:
            row = next(reader)
        except StopIteration as done:
            if rows == 0 and bad_rows() == 0:
                raise EmptyInput(name, f"is empty ({done.value})") from None
            return
        rows += 1
        yield row


def _unsupported(path: Path, name: str) -> DataError:
    return DataError(
        name,
        f"unsupported file type {''.join(path.suffixes) or '(none)'!r}; expected .jsonl (or "
        ".ndjson/.json, optionally .gz), .csv (optionally .gz), .parquet, or a folder written "
        "by datasets.save_to_disk",
    )


@contextmanager
def _gzip_errors(name: str, compressed: bool) -> Iterator[None]:
    """A ``.gz`` name on a file that is not gzip, or a cut-off one, is a file-level error."""
    try:
        yield
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        if not compressed:
            raise
        raise DataError(name, f"cannot read it as gzip: {e}") from None


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


def _read_jsonl(path: Path, name: str, compressed: bool, on_error: ErrorHandler) -> Reader:
    lines = 0
    with _gzip_errors(name, compressed), _open_binary(path, compressed) as f:
        for lines, raw in enumerate(f, start=1):  # noqa: B007 (lines is read after the loop)
            location = Location(lines, "line")
            try:
                text = _decode(raw, name, location)
                if not text.strip():
                    continue  # blank lines (often a trailing one) carry nothing
                row = _parse_object(text, name, location)
            except DataError as error:
                on_error(error)
                continue
            yield location, row
    return "only blank lines" if lines else "0 bytes"


def _parse_object(text: str, name: str, location: Location) -> dict[str, Any]:
    # A whole-file JSON array or a pretty-printed object are the usual mistakes; say so rather
    # than just "invalid JSON".
    hint = ""
    if location.number == 1 and text.lstrip().startswith("["):
        hint = " (a JSON array is not JSONL: write one JSON object per line)"
    elif text.strip() == "{":
        hint = " (an object spread over several lines is not JSONL: write one object per line)"
    try:
        # Without its line break, an error at the end of the line gets this line's column.
        value = json.loads(text.rstrip("\r\n"))
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


def _read_csv(path: Path, name: str, compressed: bool, on_error: ErrorHandler) -> Reader:
    # Long answers exceed the csv module's default cell limit of 128 KiB.
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
    with _gzip_errors(name, compressed), _open_binary(path, compressed) as f:
        reader = csv.reader(_decoded_lines(f, name, on_error))
        header = _next_record(reader, name)
        while header == []:  # blank lines before the header
            header = _next_record(reader, name)
        if header is None:
            return "only blank lines" if reader.line_num else "0 bytes"
        columns = _csv_columns(header, name, Location(reader.line_num, "line"))
        start = reader.line_num + 1  # a record's first physical line (cells may span lines)
        while True:
            try:
                cells = _next_record(reader, name)
            except DataError as error:
                on_error(error)
                start = reader.line_num + 1
                continue
            if cells is None:
                return "a header line but no rows"
            location = Location(start, "line")
            start = reader.line_num + 1
            if not cells:
                continue  # a blank line
            try:
                row = _csv_row(columns, cells, name, location)
            except DataError as error:
                on_error(error)
                continue
            yield location, row


def _csv_columns(header: list[str], name: str, location: Location) -> list[str]:
    """The header's column names; a repeated name would silently lose a column, and a single
    column holding a ';' or a tab is a file written with another separator."""
    columns = [c.strip() for c in header]
    if len(columns) == 1 and any(sep in columns[0] for sep in (";", "\t")):
        raise DataError(
            name,
            f"the header has one column {columns[0]!r}: CSV files must be comma-separated",
            location,
        )
    for i, column in enumerate(columns):
        if column and column in columns[:i]:
            raise DataError(name, f"the header repeats column {column!r}", location)
    return columns


def _decoded_lines(f: Iterable[bytes], name: str, on_error: ErrorHandler) -> Iterator[str]:
    for number, raw in enumerate(f, start=1):
        try:
            yield _decode(raw, name, Location(number, "line"))
        except DataError as error:
            on_error(error)
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


def _read_parquet(path: Path, name: str) -> Reader:
    import pyarrow as pa
    import pyarrow.parquet as pq

    number = 0
    try:
        parquet = pq.ParquetFile(path)
        for batch in parquet.iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                number += 1
                yield Location(number), row
    except (pa.ArrowException, OSError) as e:
        # Before the first row it is the file that cannot be read, not a row.
        where = Location(number + 1) if number else None
        raise DataError(name, f"cannot read Parquet: {e}", where) from None
    return f"columns {', '.join(parquet.schema_arrow.names)} but 0 rows"


# --- datasets.save_to_disk folders -------------------------------------------------------------


def _read_saved_dataset(path: Path, name: str) -> Reader:
    if not any(path.iterdir()):
        return _nothing("a folder with nothing in it")
    if (path / "dataset_dict.json").exists():
        splits = _saved_splits(path / "dataset_dict.json", name)
        return _iter_saved_dataset(path, name, splits)
    if (path / "state.json").exists():
        return _iter_saved_dataset(path, name, [None])
    raise DataError(
        name, "folder is not a datasets.save_to_disk folder (no dataset_dict.json or state.json)"
    )


def _nothing(what: str) -> Reader:
    return what
    yield  # a generator that yields no row


def _saved_splits(index: Path, name: str) -> list[str | None]:
    try:
        splits = json.loads(index.read_text(encoding="utf-8"))["splits"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(name, f"cannot read dataset_dict.json: {e!r}") from None
    return list(splits)


def _iter_saved_dataset(path: Path, name: str, splits: list[str | None]) -> Reader:
    """The rows of each split in turn (``None``: a single Dataset in ``path`` itself)."""
    for split in splits:
        for number, row in enumerate(_load_split(path, name, split), start=1):
            yield Location(number, "row", split), row
    return "a saved dataset with 0 rows"


def _load_split(path: Path, name: str, split: str | None) -> Any:
    import datasets

    folder = path if split is None else path / split
    what = "the saved dataset" if split is None else f"split {split!r} of the saved dataset"
    try:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        if state.get("_data_files") == []:
            return []  # an empty Dataset saved with zero shards, which load_from_disk rejects
        return datasets.Dataset.load_from_disk(str(folder))
    except Exception as e:  # noqa: BLE001 (datasets raises many kinds; all mean "unreadable")
        raise DataError(name, f"cannot load {what}: {e}") from None
