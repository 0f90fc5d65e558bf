"""A labelling batch: prompts, each with K >= 2 candidate answers, for people (the labelling
app) or a judge (RLAIF) to rank and score.

A batch is a folder, local or ``s3://``, published complete or not at all::

    candidates.jsonl   one task per line, in task order:
        {"task_id": "t000001",
         "prompt": [{"role": "user", "content": "Name a colour."}],
         "candidates": [{"id": "c0", "text": "Blue.", "source": "sft"},
                        {"id": "c1", "text": "Dunno.", "source": "sft"}]}
    manifest.json      written last: {"artifact": "labelling_batch", "tasks": N,
                       "candidates_per_task": [min, max], ...the writer's fields, files}

``prompt`` may also be a plain string on input (it is stored as one user message, as in every
data format of ``rlhf prepare``). ``source`` names what wrote the answer (a model, a file) and
is never shown to labellers. Within a task, candidate ids are unique and texts distinct
(ranking two identical answers says nothing).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf import storage
from rlhf.data.errors import DataError, EmptyInput, Location
from rlhf.data.formats import normalise_row
from rlhf.data.readers import read_rows

CANDIDATES_FILE = "candidates.jsonl"
ARTIFACT = "labelling_batch"

Message = dict[str, str]


@dataclass(frozen=True)
class Candidate:
    """One answer to a task's prompt."""

    id: str
    text: str
    source: str = ""


@dataclass(frozen=True)
class Task:
    """A prompt and its candidate answers (at least two, ids unique, texts distinct)."""

    task_id: str
    prompt: tuple[Message, ...]
    candidates: tuple[Candidate, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "prompt": [dict(m) for m in self.prompt],
            "candidates": [
                {"id": c.id, "text": c.text, "source": c.source} for c in self.candidates
            ],
        }


class _Invalid(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field


def _string(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(field, "must be a non-empty string")
    return value


def task_from_json(row: Mapping[str, Any]) -> Task:
    """Check one task row and build the :class:`Task`; raises ``ValueError`` with a ``field``
    attribute naming what is wrong (``candidates[2].text``)."""
    task_id = _string(row.get("task_id"), "task_id")
    if "prompt" not in row:
        raise _Invalid("prompt", "is missing")
    try:  # the prepare formats' own rules and words, e.g. "must end with a user message"
        prompt = normalise_row(
            "prompt", {"prompt": row["prompt"]}, file="", location=Location(1, "line")
        )
    except DataError as e:
        raise _Invalid(e.field or "prompt", e.reason) from None
    prompt = prompt[0]["prompt"]
    raw = row.get("candidates")
    if not isinstance(raw, list) or len(raw) < 2:
        raise _Invalid("candidates", "must be a list of at least 2 candidates")
    candidates, ids, texts = [], set(), set()
    for i, c in enumerate(raw):
        where = f"candidates[{i}]"
        if not isinstance(c, Mapping):
            raise _Invalid(where, "must be an object {id, text, source?}")
        cid = _string(c.get("id"), f"{where}.id")
        text = _string(c.get("text"), f"{where}.text")
        source = c.get("source", "")
        if not isinstance(source, str):
            raise _Invalid(f"{where}.source", "must be a string")
        if cid in ids:
            raise _Invalid(f"{where}.id", f"repeats id {cid!r}; ids must be unique within a task")
        if text in texts:
            raise _Invalid(f"{where}.text", "repeats another candidate's text; texts must differ")
        ids.add(cid)
        texts.add(text)
        candidates.append(Candidate(cid, text, source))
    return Task(task_id, tuple(dict(m) for m in prompt), tuple(candidates))


def read_tasks(uri: str) -> Iterator[Task]:
    """The tasks of the batch at ``uri`` (a published batch folder, or a bare JSONL file of task
    rows to import). Bad rows raise :class:`DataError` naming the file, line and field; task
    ids repeated across the file are an error; an empty input raises ``EmptyInput``."""
    path = storage.local_path(uri)
    name = str(uri)
    if path.is_dir():
        storage.verify_folder(path)
        name = f"{str(uri).rstrip('/')}/{CANDIDATES_FILE}"
        path = path / CANDIDATES_FILE
    seen: dict[str, Location] = {}
    for location, row in read_rows(str(path)):
        try:
            task = task_from_json(row)
        except ValueError as e:
            raise DataError(name, str(e), location, getattr(e, "field", None)) from None
        if task.task_id in seen:
            raise DataError(
                name, f"repeats the task id of {seen[task.task_id]}", location, "task_id"
            )
        seen[task.task_id] = location
        yield task


def write_batch(tasks: Iterable[Task], destination: str, fields: Mapping[str, Any]) -> str:
    """Publish ``tasks`` as a batch folder at ``destination`` (local or ``s3://``), complete or
    not at all, with ``fields`` (what made it: models, sampling settings, seed) in the manifest.
    No task is an error: an empty batch is never written."""
    with tempfile.TemporaryDirectory(prefix="rlhf-batch-") as tmp:
        folder = Path(tmp) / "batch"
        folder.mkdir()
        count, sizes, ids = 0, [], set()
        with open(folder / CANDIDATES_FILE, "w", encoding="utf-8") as f:
            for task in tasks:
                checked = task_from_json(task.to_json())  # the same rules as a reader's
                if checked.task_id in ids:
                    raise ValueError(f"{destination}: task id {checked.task_id!r} written twice")
                ids.add(checked.task_id)
                f.write(json.dumps(checked.to_json(), ensure_ascii=False) + "\n")
                count += 1
                sizes.append(len(checked.candidates))
        if count == 0:
            raise EmptyInput(destination, "no task to write: a labelling batch needs at least one")
        storage.write_manifest(
            folder,
            {
                **fields,
                "artifact": ARTIFACT,
                "tasks": count,
                "candidates_per_task": [min(sizes), max(sizes)],
            },
        )
        storage.publish(folder, destination)
    return destination
