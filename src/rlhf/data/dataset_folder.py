"""Write a ``datasets.DatasetDict`` folder shard by shard, as ``save_to_disk`` lays it out
(``dataset_dict.json``; per split ``data-0000i-of-0000n.arrow`` Arrow streams, ``state.json``,
``dataset_info.json``), so ``datasets.load_from_disk`` reads it, without ever holding a split.

Rows come in as canonical JSON lines (:func:`rlhf.data.rows.canonical_json`), which Arrow's JSON
reader turns into columns, and which are also exactly what the artifact's content checksum
hashes: no row is turned into Python objects on the way out.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.json as pa_json

_BATCH_ROWS = 1000  # rows per Arrow record batch, as save_to_disk writes them
_PARSE_ROWS = 8 * _BATCH_ROWS  # rows parsed and hashed at once (a few MB): what memory holds


class DatasetDictWriter:
    """Writes the splits of one ``DatasetDict`` into ``folder`` (which must exist) and keeps the
    content checksum (see docs/data-formats.md, the manifest) over every row written."""

    def __init__(self, folder: Path, features: datasets.Features) -> None:
        self.folder = folder
        self.features = features
        self.rows: dict[str, int] = {}
        self._checksum = hashlib.sha256()

    def write_split(self, split: str, shards: list[Iterable[bytes]]) -> None:
        """One split from its shards, each an iterable of canonical JSON lines (no line break)
        in final order, consumed a batch at a time; an empty split still gets one (empty) shard,
        which load_from_disk needs."""
        folder = self.folder / split
        folder.mkdir()
        prefix = f"[{json.dumps(split)},".encode()
        names = [f"data-{i:05d}-of-{len(shards):05d}.arrow" for i in range(len(shards))]
        split_checksum = hashlib.sha256()
        self.rows[split] = 0
        for name, lines in zip(names, shards, strict=True):
            with self._arrow_stream(folder / name) as write:
                for batch in _batches(lines, _PARSE_ROWS):
                    self.rows[split] += len(batch)
                    hashed = b"".join(prefix + line + b"]\n" for line in batch)
                    self._checksum.update(hashed)
                    split_checksum.update(hashed)
                    write(batch)
        state = {
            "_data_files": [{"filename": name} for name in names],
            "_fingerprint": split_checksum.hexdigest()[:16],
            "_format_columns": None,
            "_format_kwargs": {},
            "_format_type": None,
            "_output_all_columns": False,
            "_split": None,
        }
        (folder / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True))
        info = dataclasses.asdict(datasets.DatasetInfo(features=self.features))
        (folder / "dataset_info.json").write_text(
            json.dumps({key: info[key] for key in sorted(info)}, indent=2)
        )

    def finish(self) -> str:
        """Write ``dataset_dict.json``; return the content checksum of every split written."""
        (self.folder / "dataset_dict.json").write_text(json.dumps({"splits": list(self.rows)}))
        return self._checksum.hexdigest()

    @contextmanager
    def _arrow_stream(self, path: Path) -> Iterator[Callable[[list[bytes]], None]]:
        """An Arrow stream file at ``path``, fed a batch of lines at a time: memory holds one
        batch, never the shard. With no batch it is a valid empty stream (the schema alone)."""
        schema = self.features.arrow_schema
        parse = pa_json.ParseOptions(
            explicit_schema=pa.schema(self.features.type), unexpected_field_behavior="error"
        )

        def write(lines: list[bytes]) -> None:
            data = b"\n".join(lines) + b"\n"
            table = pa_json.read_json(
                io.BytesIO(data),
                # One block for the whole batch: one chunk, so record batches of _BATCH_ROWS.
                read_options=pa_json.ReadOptions(use_threads=False, block_size=len(data) + 1),
                parse_options=parse,
            )
            writer.write_table(table.select(schema.names).cast(schema), max_chunksize=_BATCH_ROWS)

        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            yield write


def _batches(lines: Iterable[bytes], size: int) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    for line in lines:
        batch.append(line)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
