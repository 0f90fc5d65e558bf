"""Token ids of a whole split packed into flat arrays, instead of a Python list per example.

A list of Python ints costs about 36 bytes a token (an 8-byte pointer and, for ids above 256, a
28-byte int object); these arrays cost 4 bytes a token (5 with a loss mask) and 8 per example.
Indexing gives back exactly the lists the encoders made, so batches built from them are the
same as before. ``PackedRecords`` stores whole records (a preference pair: two encoded answers and
a few numbers) the same way, column by column."""

from __future__ import annotations

import dataclasses
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar, overload

from rlhf.modeling.encoding import Encoded


class PackedIds(Sequence[list[int]]):
    """Ragged token id lists: ``packed[i]`` is the ``i``-th list."""

    def __init__(self, rows: Iterable[Sequence[int]] = ()) -> None:
        self._ids = array("i")  # token ids fit 32 bits: vocabularies are far below 2**31
        self._ends = array("q")
        for row in rows:
            self.append(row)

    def append(self, row: Sequence[int]) -> None:
        self._ids.extend(row)
        self._ends.append(len(self._ids))

    def __len__(self) -> int:
        return len(self._ends)

    def span(self, i: int) -> tuple[int, int]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"row {i} of {len(self)}")
        i %= len(self)
        return (self._ends[i - 1] if i else 0), self._ends[i]

    @overload
    def __getitem__(self, i: int) -> list[int]: ...
    @overload
    def __getitem__(self, i: slice) -> list[list[int]]: ...
    def __getitem__(self, i: int | slice) -> list[int] | list[list[int]]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        start, end = self.span(i)
        return self._ids[start:end].tolist()

    def length(self, i: int) -> int:
        start, end = self.span(i)
        return end - start

    def nbytes(self) -> int:
        return self._ids.itemsize * len(self._ids) + self._ends.itemsize * len(self._ends)


class PackedEncoded(Sequence[Encoded]):
    """Encoded examples (token ids and loss mask): ``packed[i]`` is an equal ``Encoded``."""

    def __init__(self, examples: Iterable[Encoded] = ()) -> None:
        self._ids = PackedIds()
        self._mask = array("b")
        for example in examples:
            self.append(example)

    def append(self, example: Encoded) -> None:
        self._ids.append(example.input_ids)
        self._mask.extend(example.loss_mask)

    def __len__(self) -> int:
        return len(self._ids)

    @overload
    def __getitem__(self, i: int) -> Encoded: ...
    @overload
    def __getitem__(self, i: slice) -> list[Encoded]: ...
    def __getitem__(self, i: int | slice) -> Encoded | list[Encoded]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        start, end = self._ids.span(i)
        return Encoded(self._ids[i], self._mask[start:end].tolist())

    def __iter__(self) -> Iterator[Encoded]:
        return (self[i] for i in range(len(self)))

    def length(self, i: int) -> int:
        """``len(self[i])`` without building the example."""
        return self._ids.length(i)

    def lengths(self) -> array:
        """Every example's length (8 bytes each)."""
        return array("q", (self._ids.length(i) for i in range(len(self))))

    def nbytes(self) -> int:
        return self._ids.nbytes() + len(self._mask)


R = TypeVar("R")

# How each kind of dataclass field is stored: a packed column of encoded examples, or an array
# (8 bytes a number; a bool in one byte).
_COLUMNS: dict[str, Callable[[], PackedEncoded | array]] = {
    "Encoded": PackedEncoded,
    "int": lambda: array("q"),
    "float": lambda: array("d"),
    "bool": lambda: array("b"),
}


class PackedRecords(Sequence[R]):
    """Records of one dataclass stored column by column: each ``Encoded`` field packed (as
    ``PackedEncoded``), each ``int``, ``float`` or ``bool`` field in an array; ``packed[i]``
    builds an equal record. The preference pairs of the reward model and DPO and KTO's
    examples: two encoded answers and a few numbers per row, ~5 bytes a token instead of ~36.
    """

    def __init__(self, record_type: type[R], records: Iterable[R] = ()) -> None:
        if not dataclasses.is_dataclass(record_type):
            raise TypeError(f"{record_type.__name__} is not a dataclass")
        self._type = record_type
        self._columns: dict[str, PackedEncoded | array] = {}
        self._bools: set[str] = set()
        for field in dataclasses.fields(record_type):
            kind = field.type if isinstance(field.type, str) else field.type.__name__
            if kind not in _COLUMNS:
                raise TypeError(
                    f"{record_type.__name__}.{field.name}: a field of type {kind} cannot be "
                    f"packed (Encoded, int, float or bool)"
                )
            self._columns[field.name] = _COLUMNS[kind]()
            if kind == "bool":
                self._bools.add(field.name)
        self._encoded = [n for n, c in self._columns.items() if isinstance(c, PackedEncoded)]
        for record in records:
            self.append(record)

    def append(self, record: R) -> None:
        for name, column in self._columns.items():
            column.append(getattr(record, name))

    def __len__(self) -> int:
        return len(next(iter(self._columns.values())))

    @overload
    def __getitem__(self, i: int) -> R: ...
    @overload
    def __getitem__(self, i: slice) -> list[R]: ...
    def __getitem__(self, i: int | slice) -> R | list[R]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(f"row {i} of {len(self)}")
        values = {name: column[i] for name, column in self._columns.items()}
        for name in self._bools:
            values[name] = bool(values[name])
        return self._type(**values)

    def __iter__(self) -> Iterator[R]:
        return (self[i] for i in range(len(self)))

    def column(self, name: str) -> array:
        """A numeric field of every record, without building the records."""
        column = self._columns[name]
        if isinstance(column, PackedEncoded):
            raise TypeError(f"{name} holds encoded examples, not numbers")
        return column

    def lengths(self) -> array:
        """Each record's longest encoded field: the length a batch of it pads to."""
        columns = [self._columns[n] for n in self._encoded]
        return array("q", (max(c.length(i) for c in columns) for i in range(len(self))))

    def nbytes(self) -> int:
        return sum(
            c.nbytes() if isinstance(c, PackedEncoded) else c.itemsize * len(c)
            for c in self._columns.values()
        )
