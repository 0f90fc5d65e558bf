"""The prepare stage: input files in, four validated ``datasets`` artifacts out.

Steps, per artifact (sft, preferences, prompts, eval_prompts):

1. read every file, detect its format (or use ``config.format``), check and normalise each row;
   a bad row stops the run, or with ``skip_invalid`` is dropped and listed in rejects.jsonl;
2. drop exact duplicates of normalised rows;
3. apply the token budget (drop rows over ``max_tokens``, or truncate their answers);
4. split with a seeded shuffle (rows sharing a prompt stay on one side) and publish each artifact
   atomically with a manifest.

Everything is read and checked before anything is written, so a failed run leaves no output.
See docs/data-formats.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf import storage
from rlhf.config import PrepareConfig, to_dict
from rlhf.data.errors import DataError, EmptyInput
from rlhf.data.formats import ARTIFACT_FORMATS, FORMATS, SCHEMAS, normalise_row, resolve_format
from rlhf.data.readers import read_rows
from rlhf.tracking import Tracker

log = logging.getLogger("rlhf.prepare")

Row = dict[str, Any]
ARTIFACTS = ("sft", "preferences", "prompts", "eval_prompts")
TRAIN_SPLITS = ("sft", "preferences", "prompts")  # the artifacts split into train/validation
OVER_BUDGET_MODES = ("drop", "truncate")


@dataclass
class PrepareInputs:
    """Input URIs (local paths or s3://) per artifact; each list may hold several files."""

    sft: list[str] = field(default_factory=list)
    preferences: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    eval_prompts: list[str] = field(default_factory=list)


@dataclass
class PrepareOutputs:
    """Where the artifacts go: four folders and the rejects file (JSON lines)."""

    sft: str
    preferences: str
    prompts: str
    eval_prompts: str
    rejects: str

    @classmethod
    def in_folder(cls, out: str | Path) -> PrepareOutputs:
        """The standard layout: ``out/sft``, ..., ``out/eval_prompts``, ``out/rejects.jsonl``."""
        out = Path(out)
        return cls(*(str(out / name) for name in ARTIFACTS), rejects=str(out / "rejects.jsonl"))


@dataclass
class _Artifact:
    name: str
    sources: list[str]
    formats: dict[str, str | None] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)  # per row, once the budget is applied
    valid_rows: int = 0  # input rows that passed validation (a ranking row gives several pairs)
    normalised_rows: int = 0  # the rows valid_rows gave, before dedupe and the token budget
    rejected: int = 0
    first_rejection: str | None = None  # the first rejected row's error, to say why none is left
    duplicates_dropped: int = 0
    over_budget_dropped: int = 0
    over_budget_truncated: int = 0
    splits: dict[str, list[Row]] = field(default_factory=dict)
    split_tokens: dict[str, list[int]] = field(default_factory=dict)
    derived_from: str | None = None


def run(
    config: PrepareConfig,
    inputs: PrepareInputs,
    outputs: PrepareOutputs,
    tracker: Tracker | None = None,
) -> dict[str, float]:
    """Validate, normalise, dedupe, budget and split the inputs; write the artifacts and the
    rejects file; return flat metrics. Raises DataError (writing nothing) on bad input."""
    _check_config(config, inputs)
    rejects: list[dict[str, Any]] = []
    artifacts = {
        name: _read_artifact(name, getattr(inputs, name), config, rejects) for name in ARTIFACTS
    }
    counter = _TokenCounter(config.tokenizer)
    for art in artifacts.values():
        if config.dedupe:
            _dedupe(art)
        _apply_budget(art, config.max_tokens, config.over_budget, counter)
        _check_rows_left(art, config)
    for name in TRAIN_SPLITS:
        _split(artifacts[name], config.validation_fraction, config.seed)
    _eval_split(artifacts["eval_prompts"], artifacts["prompts"], derived=not inputs.eval_prompts)

    # Every input is valid: only now does anything get written.
    for name, art in artifacts.items():
        _write(art, getattr(outputs, name), config)
    storage.atomic_write_text(
        outputs.rejects, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejects)
    )
    if config.publish_to:
        from rlhf.stages.publish import publish_copy

        root, tags = config.publish_to.rstrip("/"), tracker or Tracker()
        for name in ARTIFACTS:
            publish_copy(getattr(outputs, name), f"{root}/{name}", tags, name)
        publish_copy(outputs.rejects, f"{root}/rejects.jsonl", tags, "rejects")

    metrics = _metrics(artifacts)
    for art in artifacts.values():
        log.debug("%s: %s", art.name, {s: len(rows) for s, rows in art.splits.items()})
    if tracker is not None:
        params = {**to_dict(config)}
        params.update({f"inputs.{n}": ",".join(map(str, getattr(inputs, n))) for n in ARTIFACTS})
        tracker.log_params(params)
        tracker.log_metrics(metrics)
    return metrics


def _check_config(config: PrepareConfig, inputs: PrepareInputs) -> None:
    if config.over_budget not in OVER_BUDGET_MODES:
        raise ValueError(
            f"over_budget must be one of {OVER_BUDGET_MODES}, got {config.over_budget!r}"
        )
    if not 0 <= config.validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in [0, 1), got {config.validation_fraction}")
    if config.max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {config.max_tokens}")
    if config.format is not None:
        if config.format not in FORMATS:
            raise ValueError(f"unknown format {config.format!r}; known: {', '.join(FORMATS)}")
        used_by = [a for a, formats in ARTIFACT_FORMATS.items() if config.format in formats]
        if not any(getattr(inputs, a) for a in used_by):
            log.warning("format %s is forced but there are no %s inputs", config.format, used_by)


# --- reading -----------------------------------------------------------------------------------


def _read_artifact(
    name: str, uris: list[str], config: PrepareConfig, rejects: list[dict[str, Any]]
) -> _Artifact:
    art = _Artifact(name, [str(u) for u in uris])
    # --format applies to the artifacts that accept that format; the others still detect theirs.
    forced = config.format if config.format in ARTIFACT_FORMATS[name] else None
    columns = list(SCHEMAS[name])

    def reject(error: DataError) -> None:
        if not config.skip_invalid:
            raise error
        art.rejected += 1
        art.first_rejection = art.first_rejection or str(error)
        rejects.append(
            {"file": error.file, "row": error.row, "field": error.field, "error": str(error)}
        )

    on_error = reject if config.skip_invalid else None
    for uri in art.sources:
        fmt = forced
        detected_from = None  # the row the file's format was detected from
        try:
            for location, raw in read_rows(uri, on_error=on_error):
                try:
                    if fmt is None:
                        fmt = resolve_format(raw, name, file=uri, location=location)
                        detected_from = location, raw
                        log.info("%s: detected format %s", uri, fmt)
                    normalised = normalise_row(
                        fmt, raw, file=uri, location=location, detected_from=detected_from
                    )
                except DataError as error:
                    reject(error)
                    continue
                art.valid_rows += 1
                art.rows.extend({c: row[c] for c in columns} for row in normalised)
        except EmptyInput as empty:
            if not config.allow_empty:
                raise DataError(
                    empty.file,
                    f"{empty.reason}: there is nothing to prepare from it (set allow_empty=true "
                    "to accept an empty input)",
                ) from None
            log.warning(
                "%s %s; allow_empty is set, so it gives no %s rows", uri, empty.reason, name
            )
        art.formats[uri] = fmt
    art.normalised_rows = len(art.rows)
    return art


# --- dedupe and token budget -------------------------------------------------------------------


def canonical_json(value: Any) -> str:
    """One spelling per value: what dedupe compares and the content checksum hashes."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _dedupe(art: _Artifact) -> None:
    seen: set[bytes] = set()
    kept = []
    for row in art.rows:
        key = hashlib.sha256(canonical_json(row).encode("utf-8")).digest()
        if key in seen:
            art.duplicates_dropped += 1
        else:
            seen.add(key)
            kept.append(row)
    art.rows = kept


class _TokenCounter:
    """Counts tokens with a tokenizer, or UTF-8 bytes without one (an upper bound on the token
    count of any byte-level BPE tokenizer, so a byte budget is never too generous)."""

    def __init__(self, tokenizer: str | None) -> None:
        self.tokenizer = None
        if tokenizer:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(str(storage.local_path(tokenizer)))

    def count(self, text: str) -> int:
        if self.tokenizer is None:
            return len(text.encode("utf-8"))
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def count_many(self, texts: list[str], batch: int = 1024) -> list[int]:
        """``count`` for many texts; a tokenizer encodes them in batches (much faster)."""
        if self.tokenizer is None:
            return [len(t.encode("utf-8")) for t in texts]
        counts: list[int] = []
        for start in range(0, len(texts), batch):
            encoded = self.tokenizer(texts[start : start + batch], add_special_tokens=False)
            counts.extend(len(ids) for ids in encoded["input_ids"])
        return counts

    def truncate(self, text: str, limit: int) -> str:
        """The longest start of ``text`` that counts at most ``limit``."""
        if self.tokenizer is None:
            return text.encode("utf-8")[:limit].decode("utf-8", errors="ignore")
        # Cut the original text at a token boundary rather than decoding ids, which need not
        # give the text back exactly; re-encoding a cut can merge differently, so re-check.
        offsets = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)[
            "offset_mapping"
        ]
        for n in range(min(limit, len(offsets)), 0, -1):
            cut = text[: offsets[n - 1][1]]
            if self.count(cut) <= limit:
                return cut
        return ""


def _prompt_and_answers(artifact: str, row: Row) -> tuple[list[dict[str, str]], list[str]]:
    if artifact == "sft":
        return row["messages"][:-1], [row["messages"][-1]["content"]]
    if artifact == "preferences":
        return row["prompt"], [row["chosen"], row["rejected"]]
    return row["prompt"], []  # prompts are generated from, not trained on: no answer to count


def _with_answers(artifact: str, row: Row, answers: list[str]) -> Row:
    if artifact == "sft":
        return {"messages": [*row["messages"][:-1], {"role": "assistant", "content": answers[0]}]}
    return {**row, "chosen": answers[0], "rejected": answers[1]}


def _apply_budget(art: _Artifact, max_tokens: int, mode: str, counter: _TokenCounter) -> None:
    """Keep rows whose prompt plus longest answer fits ``max_tokens``; with ``truncate``, cut
    over-long answers to fit unless the prompt alone fills the budget or the cut leaves an
    empty answer or two equal ones."""
    kept, tokens = [], []
    parts = [_prompt_and_answers(art.name, row) for row in art.rows]
    texts = [t for prompt, answers in parts for t in [*(m["content"] for m in prompt), *answers]]
    counts = iter(counter.count_many(texts))
    for row, (prompt, answers) in zip(art.rows, parts, strict=True):
        prompt_tokens = sum(next(counts) for _ in prompt)
        answer_tokens = [next(counts) for _ in answers]
        total = prompt_tokens + max(answer_tokens, default=0)
        if total <= max_tokens:
            kept.append(row)
            tokens.append(total)
            continue
        room = max_tokens - prompt_tokens
        fitted = None
        if mode == "truncate" and answers and room > 0:
            fitted = [
                a if n <= room else counter.truncate(a, room)
                for a, n in zip(answers, answer_tokens, strict=True)
            ]
            empty = any(not a.strip() for a in fitted)
            if empty or (len(fitted) == 2 and fitted[0].strip() == fitted[1].strip()):
                fitted = None
        if fitted is None:
            art.over_budget_dropped += 1
            continue
        art.over_budget_truncated += 1
        kept.append(_with_answers(art.name, row, fitted))
        tokens.append(prompt_tokens + max(counter.count(a) for a in fitted))
    art.rows, art.tokens = kept, tokens


def _check_rows_left(art: _Artifact, config: PrepareConfig) -> None:
    """Inputs that had rows but left none (all rejected, tied, duplicates or over budget) would
    make an empty artifact no one asked for: an error saying where the rows went, or with
    ``allow_empty`` a warning."""
    read = art.valid_rows + art.rejected
    if art.rows or read == 0:  # read == 0: no inputs, or empty ones that allow_empty accepted
        return
    causes = []
    if art.rejected:
        causes.append(
            f"{art.rejected} rejected as invalid (skip_invalid); the first: {art.first_rejection}"
        )
    if art.valid_rows and not art.normalised_rows:
        causes.append(f"{art.valid_rows} valid ranking(s) gave no pair (all their responses tie)")
    if art.duplicates_dropped:
        causes.append(f"{art.duplicates_dropped} dropped as duplicates (dedupe)")
    if art.over_budget_dropped:
        unit = "tokens" if config.tokenizer else "UTF-8 bytes"
        fix = "raise max_tokens" + (" or set over_budget=truncate" * (config.over_budget == "drop"))
        causes.append(
            f"{art.over_budget_dropped} dropped as over the budget of max_tokens="
            f"{config.max_tokens} {unit} ({fix})"
        )
    reason = f"no {art.name} row is left of the {read} read: {'; '.join(causes)}"
    if config.allow_empty:
        log.warning(
            "%s: %s; allow_empty is set, so %s is written empty", art.sources, reason, art.name
        )
        return
    raise DataError(", ".join(art.sources), f"{reason} (allow_empty=true would write it empty)")


# --- split -------------------------------------------------------------------------------------


def _prompt_key(artifact: str, row: Row) -> str:
    prompt = row["messages"][:-1] if artifact == "sft" else row["prompt"]
    return canonical_json(prompt)


def split_indices(keys: list[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded train/validation split of rows ``0..len(keys)-1``.

    Rows with the same key (the prompt) land on the same side, so validation measures prompts
    never trained on (a ranking's pairs all share one prompt). Validation gets about
    ``fraction`` of the rows, never more than ``round(n * fraction)`` except that it gets at
    least one row when there are two rows or more and ``fraction > 0``, and train keeps at least
    one. With a single prompt the rows themselves are split."""
    n = len(keys)
    rng = random.Random(seed)
    if n < 2 or fraction <= 0:
        train = list(range(n))
        rng.shuffle(train)
        return train, []
    target = min(n - 1, max(1, round(n * fraction)))
    by_key: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        by_key.setdefault(key, []).append(i)
    groups = list(by_key.values()) if len(by_key) > 1 else [[i] for i in range(n)]
    rng.shuffle(groups)
    validation: list[int] = []
    for group in groups:
        if len(validation) + len(group) <= target:
            validation.extend(group)
    if not validation:  # every group is bigger than the target: take the smallest
        validation = list(min(groups, key=len))
    held_out = set(validation)
    train = [i for group in groups for i in group if i not in held_out]
    rng.shuffle(train)
    rng.shuffle(validation)
    return train, validation


def _split(art: _Artifact, fraction: float, seed: int) -> None:
    keys = [_prompt_key(art.name, row) for row in art.rows]
    train, validation = split_indices(keys, fraction, seed)
    for split, indices in (("train", train), ("validation", validation)):
        art.splits[split] = [art.rows[i] for i in indices]
        art.split_tokens[split] = [art.tokens[i] for i in indices]


def _eval_split(evals: _Artifact, prompts: _Artifact, derived: bool) -> None:
    """Evaluation prompts come from their own files or, without any, from the prompts'
    validation split (with no references)."""
    if not derived:
        evals.splits["test"], evals.split_tokens["test"] = evals.rows, evals.tokens
        return
    evals.derived_from = "prompts/validation"
    evals.sources = list(prompts.sources)
    evals.splits["test"] = [
        {"prompt": row["prompt"], "reference": None} for row in prompts.splits["validation"]
    ]
    evals.split_tokens["test"] = list(prompts.split_tokens["validation"])


# --- write -------------------------------------------------------------------------------------


def content_sha256(splits: dict[str, list[Row]]) -> str:
    """sha256 over one line per row, in split then row order: the canonical JSON (sorted keys,
    no spaces, UTF-8) of ``[split, row]`` followed by a newline."""
    h = hashlib.sha256()
    for split, rows in splits.items():
        for row in rows:
            h.update((canonical_json([split, row]) + "\n").encode("utf-8"))
    return h.hexdigest()


def _write(art: _Artifact, folder: str, config: PrepareConfig) -> None:
    import datasets

    features = SCHEMAS[art.name]
    dataset = datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict(
                {c: [row[c] for row in rows] for c in features}, features=features
            )
            for split, rows in art.splits.items()
        }
    )
    fields = {
        "artifact": art.name,
        "sources": art.sources,
        "formats": art.formats,
        "derived_from": art.derived_from,
        "input_rows": art.valid_rows + art.rejected,
        "rows": {split: len(rows) for split, rows in art.splits.items()},
        "rejected": art.rejected,
        "duplicates_dropped": art.duplicates_dropped,
        "over_budget_dropped": art.over_budget_dropped,
        "over_budget_truncated": art.over_budget_truncated,
        "max_tokens": config.max_tokens,
        "token_count": config.tokenizer or "utf-8 bytes",
        "schema": features.to_dict(),
        "content_sha256": content_sha256(art.splits),
        "seed": config.seed,
        "validation_fraction": config.validation_fraction,
    }
    with storage.atomic_dir(folder) as tmp:
        # An empty split saved with default sharding gets zero shards, which load_from_disk
        # cannot read back; one (empty) shard loads fine.
        empty = {split: 1 for split, rows in art.splits.items() if not rows}
        dataset.save_to_disk(str(tmp), num_shards=empty)
        storage.write_manifest(tmp, fields)


def _metrics(artifacts: dict[str, _Artifact]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    counts = ("rejected", "duplicates_dropped", "over_budget_dropped", "over_budget_truncated")
    for name, art in artifacts.items():
        metrics[f"{name}/input_rows"] = float(art.valid_rows + art.rejected)
        for split, rows in art.splits.items():
            metrics[f"{name}/{split}_rows"] = float(len(rows))
        for count in counts:
            metrics[f"{name}/{count}"] = float(getattr(art, count))
        tokens = [t for split_tokens in art.split_tokens.values() for t in split_tokens]
        metrics[f"{name}/tokens_mean"] = sum(tokens) / len(tokens) if tokens else 0.0
        metrics[f"{name}/tokens_max"] = float(max(tokens, default=0))
    for count in counts:
        metrics[f"total/{count}"] = sum(metrics[f"{name}/{count}"] for name in artifacts)
    return metrics
