"""The prepare stage: input files in, five validated ``datasets`` artifacts out.

Steps, per artifact (sft, preferences, prompts, eval_prompts, unpaired):

1. read every file, detect its format (or use ``config.format``), check and normalise each row;
   a bad row stops the run, or with ``skip_invalid`` is dropped and listed in rejects.jsonl;
2. apply the token budget (drop rows over ``max_tokens``, or truncate their answers);
3. drop exact duplicates of normalised rows (counted before the budget's drops);
4. split with a seeded shuffle (rows sharing a prompt stay on one side) and publish each artifact
   atomically with a manifest. With ``unpaired_from_preferences`` each kept preference pair also
   gives two unpaired rows (chosen desirable, rejected not), in the pair's split, after the rows
   of the unpaired files.

Rows stream: each is read, checked and budgeted once, then kept on disk in a scratch folder
(:mod:`rlhf.data.row_spill`), with a few bytes per row in memory for dedupe and the split.
Everything is read and checked before any output is written, so a failed run leaves no output.
See docs/data-formats.md.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rlhf import storage
from rlhf.config import PrepareConfig, to_dict
from rlhf.data.dataset_folder import DatasetDictWriter
from rlhf.data.errors import DataError, EmptyInput
from rlhf.data.formats import (
    ARTIFACT_FORMATS,
    FORMATS,
    SCHEMAS,
    normalise_row,
    resolve_format,
    unpair,
)
from rlhf.data.readers import read_rows
from rlhf.data.row_spill import DROPPED, FITS, TRUNCATED, RowSpill, Shard
from rlhf.data.rows import Row, canonical_json, contradicting, digest, pair_key, prompt_key
from rlhf.data.splits import split_groups
from rlhf.data.token_budget import TokenCounter, apply_budget
from rlhf.stages.publish import publish_copy
from rlhf.stages.specs import ARTIFACTS, PrepareInputs, PrepareOutputs
from rlhf.tracking import Tracker

log = logging.getLogger("rlhf.prepare")

# The artifacts split into train/validation.
TRAIN_SPLITS = ("sft", "preferences", "prompts", "unpaired")
BUDGET_BATCH = 1024  # rows budgeted at once (a tokenizer counts a batch much faster)


@dataclass
class _Artifact:
    name: str
    sources: list[str]
    spill: RowSpill
    formats: dict[str, str | None] = field(default_factory=dict)
    valid_rows: int = 0  # input rows that passed validation (a ranking row gives several pairs)
    rejected: int = 0
    first_rejection: str | None = None  # the first rejected row's error, to say why none is left
    duplicates_dropped: int = 0
    over_budget_dropped: int = 0
    over_budget_truncated: int = 0
    # preferences: per row, its answers as an unordered pair (16 bytes) and their order (1 byte)
    pair_keys: bytearray = field(default_factory=bytearray)
    pair_orders: bytearray = field(default_factory=bytearray)
    contradicting_pairs: int = 0  # kept pairs that another kept pair orders the other way
    kept: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # rows that stay
    splits: dict[str, np.ndarray] = field(default_factory=dict)  # rows (numbers) per split
    shards: dict[str, list[Shard]] = field(default_factory=dict)
    derived_from: str | None = None
    # unpaired_from_preferences: the preference pairs whose answers this artifact also holds
    pairs_from: _Artifact | None = None

    @property
    def copies_prompts(self) -> bool:  # eval_prompts made from the prompts' validation split
        return self.derived_from is not None and self.pairs_from is None

    @property
    def normalised_rows(self) -> int:  # the rows valid_rows gave, before dedupe and the budget
        return len(self.spill)


def run(
    config: PrepareConfig,
    inputs: PrepareInputs,
    outputs: PrepareOutputs,
    tracker: Tracker | None = None,
) -> dict[str, float]:
    """Validate, normalise, budget, dedupe and split the inputs; write the artifacts and the
    rejects file; return flat metrics. Raises DataError (writing nothing) on bad input."""
    _check_config(config, inputs)
    # Rows wait on disk here until every input is read; TMPDIR chooses where.
    scratch = Path(tempfile.mkdtemp(prefix="rlhf-prepare-"))
    try:
        return _run(config, inputs, outputs, tracker, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run(
    config: PrepareConfig,
    inputs: PrepareInputs,
    outputs: PrepareOutputs,
    tracker: Tracker | None,
    scratch: Path,
) -> dict[str, float]:
    rejects: list[dict[str, Any]] = []
    counter = TokenCounter(config.tokenizer)
    artifacts = {
        name: _read_artifact(name, getattr(inputs, name), config, rejects, counter, scratch)
        for name in ARTIFACTS
    }
    for art in artifacts.values():
        selection = art.spill.select(config.dedupe)
        art.kept, art.duplicates_dropped = selection.rows, selection.duplicates
        art.over_budget_dropped, art.over_budget_truncated = selection.dropped, selection.truncated
        _check_rows_left(art, config)
    _count_contradictions(artifacts["preferences"])
    for name in TRAIN_SPLITS:
        _split(artifacts[name], config.validation_fraction, config.seed)
    _eval_split(artifacts["eval_prompts"], artifacts["prompts"], not inputs.eval_prompts, config)
    if config.unpaired_from_preferences:
        _unpair_preferences(artifacts["unpaired"], artifacts["preferences"])
    for art in artifacts.values():
        if not art.copies_prompts:
            art.shards = art.spill.scatter(art.splits, scratch)

    # Every input is valid: only now does anything get written.
    for name, art in artifacts.items():
        _write(art, getattr(outputs, name), config, artifacts["prompts"])
    storage.atomic_write_text(
        outputs.rejects, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejects)
    )
    if config.publish_to:
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
    """What the config's own checks (``PrepareConfig.__post_init__``) cannot see: a format
    name (the formats are data logic) and whether a forced format has inputs to apply to."""
    if config.format is not None:
        if config.format not in FORMATS:
            raise ValueError(f"unknown format {config.format!r}; known: {', '.join(FORMATS)}")
        used_by = [a for a, formats in ARTIFACT_FORMATS.items() if config.format in formats]
        if not any(getattr(inputs, a) for a in used_by):
            log.warning("format %s is forced but there are no %s inputs", config.format, used_by)


# --- reading -----------------------------------------------------------------------------------


def _read_artifact(
    name: str,
    uris: list[str],
    config: PrepareConfig,
    rejects: list[dict[str, Any]],
    counter: TokenCounter,
    scratch: Path,
) -> _Artifact:
    art = _Artifact(name, [str(u) for u in uris], RowSpill(scratch / f"{name}.jsonl"))
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

    pending: list[Row] = []  # normalised rows waiting for the budget, a batch at a time

    def budget() -> None:
        for row, fitted in zip(
            pending,
            apply_budget(name, pending, config.max_tokens, config.over_budget, counter),
            strict=True,
        ):
            line = canonical_json(row)
            outcome = FITS
            if fitted.row is None:
                outcome = DROPPED
            elif fitted.truncated:
                outcome, line = TRUNCATED, canonical_json(fitted.row)
            prompt = digest(prompt_key(name, row))
            if name == "preferences":
                key, order = pair_key(prompt, row["chosen"], row["rejected"])
                art.pair_keys += key
                art.pair_orders.append(order)
            # Dedupe compares rows as normalised, before the budget cut them.
            art.spill.add(
                digest(canonical_json(row)) if outcome == TRUNCATED else digest(line),
                prompt,
                fitted.tokens,
                outcome,
                line,
            )
        pending.clear()

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
                pending.extend({c: row[c] for c in columns} for row in normalised)
                if len(pending) >= BUDGET_BATCH:
                    budget()
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
    budget()
    art.spill.close()
    return art


def _check_rows_left(art: _Artifact, config: PrepareConfig) -> None:
    """Inputs that had rows but left none (all rejected, tied, duplicates or over budget) would
    make an empty artifact no one asked for: an error saying where the rows went, or with
    ``allow_empty`` a warning."""
    read = art.valid_rows + art.rejected
    if len(art.kept) or read == 0:  # read == 0: no inputs, or empty ones that allow_empty accepted
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


def _count_contradictions(preferences: _Artifact) -> None:
    """Pairs that other pairs order the other way (labellers who disagree) are kept: to the
    Bradley-Terry loss, 3 pairs saying A > B and 1 saying B > A make the target 0.75, which is
    what they measured. They are counted and reported, as a share too high says the labels
    are noise."""
    art = preferences
    art.contradicting_pairs = contradicting(art.pair_keys, art.pair_orders, art.kept)
    if art.contradicting_pairs:
        log.warning(
            "preferences: %d of the %d pairs kept have a pair with the same prompt and answers "
            "in the other order (labellers disagree); kept, they pull those answers towards a "
            "tie (docs/data-formats.md#contradicting-pairs)",
            art.contradicting_pairs, len(art.kept),
        )  # fmt: skip


def _split(art: _Artifact, fraction: float, seed: int) -> None:
    train, validation = split_groups(art.spill.prompt_groups(art.kept), fraction, seed)
    art.splits = {"train": art.kept[train], "validation": art.kept[validation]}


def _eval_split(evals: _Artifact, prompts: _Artifact, derived: bool, config: PrepareConfig) -> None:
    """Evaluation prompts come from their own files or, without any, from the prompts'
    validation split (with no references); a warning when that leaves prompts but no
    evaluation prompts (the evaluation stage would have nothing to compare on)."""
    if not derived:
        evals.splits["test"] = evals.kept
        return
    evals.derived_from = "prompts/validation"
    evals.sources = list(prompts.sources)
    if len(prompts.kept) and not len(prompts.splits["validation"]):
        log.warning(
            "eval_prompts: no files given and the prompts' validation split is empty "
            "(validation_fraction=%s, %d prompts), so eval_prompts is written empty; give "
            "eval prompt files or a validation_fraction above 0",
            config.validation_fraction, len(prompts.kept),
        )  # fmt: skip


def _unpair_preferences(unpaired: _Artifact, preferences: _Artifact) -> None:
    """Each kept preference pair also gives two unpaired rows in the pair's split (a validation
    pair stays out of training), written after the rows of the unpaired files. Each row's token
    count is its pair's (prompt plus the longer answer): an upper bound."""
    if not len(preferences.kept):
        raise DataError(
            ", ".join(preferences.sources) or "preferences",
            "unpaired_from_preferences is set but there are no preference pairs to split",
        )
    unpaired.pairs_from = preferences
    unpaired.derived_from = "preferences" if not len(unpaired.kept) else "files and preferences"
    unpaired.sources = [*unpaired.sources, *preferences.sources]


def _unpaired_lines(preference_lines: Iterable[bytes]) -> Iterator[bytes]:
    """A preference row's canonical JSON as the canonical JSON of its two unpaired rows."""
    for line in preference_lines:
        for row in unpair(json.loads(line)):
            yield canonical_json(row).encode("utf-8")


def _derived_eval_lines(prompt_lines: Iterable[bytes]) -> Iterator[bytes]:
    """A prompts row's canonical JSON ``{"prompt":[...]}`` as an eval_prompts row with no
    reference: ``{"prompt":[...],"reference":null}`` (keys stay sorted)."""
    return (line[:-1] + b',"reference":null}' for line in prompt_lines)


# --- write -------------------------------------------------------------------------------------


def _write(art: _Artifact, folder: str, config: PrepareConfig, prompts: _Artifact) -> None:
    features = SCHEMAS[art.name]
    with storage.atomic_dir(folder) as tmp:
        writer = DatasetDictWriter(tmp, features)
        if art.pairs_from is not None:  # own rows, then the pairs' answers of that split
            for split, shards in art.shards.items():
                pairs = art.pairs_from.shards[split]
                writer.write_split(
                    split,
                    [s.lines() for s in shards] + [_unpaired_lines(s.lines()) for s in pairs],
                )
        elif not art.copies_prompts:
            for split, shards in art.shards.items():
                writer.write_split(split, [shard.lines() for shard in shards])
        else:  # the prompts' validation shards, read again
            shards = prompts.shards["validation"]
            writer.write_split("test", [_derived_eval_lines(s.lines()) for s in shards])
        fields = {
            "artifact": art.name,
            "sources": art.sources,
            "formats": art.formats,
            "derived_from": art.derived_from,
            "from_preferences": _from_preferences(art),
            "input_rows": art.valid_rows + art.rejected,
            "rows": writer.rows,
            "rejected": art.rejected,
            "duplicates_dropped": art.duplicates_dropped,
            "over_budget_dropped": art.over_budget_dropped,
            "over_budget_truncated": art.over_budget_truncated,
            **(
                {"contradicting_pairs": art.contradicting_pairs}
                if art.name == "preferences"
                else {}
            ),
            "max_tokens": config.max_tokens,
            "token_count": config.tokenizer or "utf-8 bytes",
            "schema": features.to_dict(),
            "content_sha256": writer.finish(),
            "seed": config.seed,
            "validation_fraction": config.validation_fraction,
        }
        storage.write_manifest(tmp, fields)


def _from_preferences(art: _Artifact) -> int:
    """How many of the artifact's rows were split out of preference pairs."""
    return 2 * len(art.pairs_from.kept) if art.pairs_from is not None else 0


def _split_rows(art: _Artifact, prompts: _Artifact) -> dict[str, int]:
    """Rows per split of what the artifact holds (a derived eval_prompts: the prompts'
    validation split; unpaired rows from pairs: two per pair)."""
    if art.copies_prompts:
        return {"test": len(prompts.splits["validation"])}
    pairs = art.pairs_from.splits if art.pairs_from is not None else {}
    return {s: len(rows) + 2 * len(pairs.get(s, ())) for s, rows in art.splits.items()}


def _split_tokens(art: _Artifact, prompts: _Artifact) -> np.ndarray:
    """Token counts of the rows the artifact holds (a derived eval_prompts: the prompts'; an
    unpaired row from a pair: the pair's)."""
    if art.copies_prompts:
        return prompts.spill.row_tokens(prompts.splits["validation"])
    tokens = [art.spill.row_tokens(rows) for rows in art.splits.values()]
    if art.pairs_from is not None:
        pairs = art.pairs_from
        tokens += [np.repeat(pairs.spill.row_tokens(r), 2) for r in pairs.splits.values()]
    return np.concatenate(tokens)


def _metrics(artifacts: dict[str, _Artifact]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    counts = ("rejected", "duplicates_dropped", "over_budget_dropped", "over_budget_truncated")
    prompts = artifacts["prompts"]
    for name, art in artifacts.items():
        metrics[f"{name}/input_rows"] = float(art.valid_rows + art.rejected)
        for split, rows in _split_rows(art, prompts).items():
            metrics[f"{name}/{split}_rows"] = float(rows)
        for count in counts:
            metrics[f"{name}/{count}"] = float(getattr(art, count))
        tokens = _split_tokens(art, prompts)
        metrics[f"{name}/tokens_mean"] = int(tokens.sum()) / len(tokens) if len(tokens) else 0.0
        metrics[f"{name}/tokens_max"] = float(tokens.max()) if len(tokens) else 0.0
    metrics["preferences/contradicting_pairs"] = float(artifacts["preferences"].contradicting_pairs)
    for count in counts:
        metrics[f"total/{count}"] = sum(metrics[f"{name}/{count}"] for name in artifacts)
    return metrics
