"""The one error type bad input data raises, and where in a file it was found.

Every message has the same shape, so a person can go straight to the offending line::

    data/prefs.jsonl: line 7: field 'chosen': must be a non-empty string
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Location:
    """A row's place in its file: ``line 7`` (JSONL, CSV: the physical 1-based line, the CSV
    header being line 1), ``row 7`` (Parquet, a saved Dataset: 1-based) or
    ``split train row 7`` (a saved DatasetDict)."""

    number: int
    unit: str = "row"
    split: str | None = None

    def __str__(self) -> str:
        where = f"{self.unit} {self.number}"
        return f"split {self.split} {where}" if self.split is not None else where


class DataError(ValueError):
    """Input data that cannot be used, naming the file, the line or row, and the field."""

    def __init__(
        self,
        file: str,
        reason: str,
        location: Location | None = None,
        field: str | None = None,
    ) -> None:
        self.file = str(file)
        self.reason = reason
        self.location = location
        self.row: int | None = location.number if location is not None else None
        self.field = field
        parts = [self.file]
        if location is not None:
            parts.append(str(location))
        if field is not None:
            parts.append(f"field {field!r}")
        parts.append(reason)
        super().__init__(": ".join(parts))

    def __reduce__(self):  # keep the error picklable (it may cross process boundaries)
        return (type(self), (self.file, self.reason, self.location, self.field))


class EmptyInput(DataError):
    """An input file or folder that holds no rows at all (not even unreadable ones); the reason
    says what it holds instead, e.g. ``is empty (0 bytes)``."""


def json_type_name(value: Any) -> str:
    """How an error message names the type of a parsed value: null, boolean, number, string,
    list or object, the same words for every input file type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "list", dict: "object"}.get(type(value), type(value).__name__)
