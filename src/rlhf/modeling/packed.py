"""Token ids of a whole split packed into flat arrays, instead of a Python list per example.

A list of Python ints costs about 36 bytes a token (an 8-byte pointer and, for ids above 256, a
28-byte int object); these arrays cost 4 bytes a token (5 with a loss mask) and 8 per example.
Indexing gives back exactly the lists the encoders made, so batches built from them are the
same as before."""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import overload

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
