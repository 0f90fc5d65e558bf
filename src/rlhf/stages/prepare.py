"""The prepare stage: input files in, five validated ``datasets`` artifacts out.

Steps, per artifact (sft, preferences, prompts, eval_prompts, unpaired):

1. read every file, detect its format (or use ``config.format``), check and normalise each row;
   a bad row stops the run, or with ``skip_invalid`` is dropped and listed in rejects.jsonl;
2. drop exact duplicates of normalised rows;
3. apply the token budget (drop rows over ``max_tokens``, or truncate their answers);
4. split with a seeded shuffle (rows sharing a prompt stay on one side) and publish each artifact
   atomically with a manifest. With ``unpaired_from_preferences`` each preference pair also
   gives two unpaired rows, in its own split.

Everything is read and checked before anything is written, so a failed run leaves no output.
See docs/data-formats.md.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from rlhf import storage
from rlhf.config import PrepareConfig, to_dict
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
from rlhf.data.rows import Row, content_sha256, dedupe, prompt_key
from rlhf.data.splits import split_indices
from rlhf.data.token_budget import TokenCounter, apply_budget
from rlhf.stages.publish import publish_copy
from rlhf.stages.specs import ARTIFACTS, PrepareInputs, PrepareOutputs
from rlhf.tracking import Tracker

log = logging.getLogger("rlhf.prepare")

# The artifacts split into train/validation.
TRAIN_SPLITS = ("sft", "preferences", "prompts", "unpaired")


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
    from_preferences: int = 0  # unpaired rows split out of preference pairs


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
    counter = TokenCounter(config.tokenizer)
    for art in artifacts.values():
        if config.dedupe:
            art.rows, art.duplicates_dropped = dedupe(art.rows)
        fitted = apply_budget(art.name, art.rows, config.max_tokens, config.over_budget, counter)
        art.rows, art.tokens = fitted.rows, fitted.tokens
        art.over_budget_dropped, art.over_budget_truncated = fitted.dropped, fitted.truncated
        _check_rows_left(art, config)
    for name in TRAIN_SPLITS:
        _split(artifacts[name], config.validation_fraction, config.seed)
    _eval_split(artifacts["eval_prompts"], artifacts["prompts"], not inputs.eval_prompts, config)
    if config.unpaired_from_preferences:
        _unpair_preferences(artifacts["unpaired"], artifacts["preferences"])

    # Every input is valid: only now does anything get written.
    for name, art in artifacts.items():
        _write(art, getattr(outputs, name), config)
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


def _split(art: _Artifact, fraction: float, seed: int) -> None:
    keys = [prompt_key(art.name, row) for row in art.rows]
    train, validation = split_indices(keys, fraction, seed)
    for split, indices in (("train", train), ("validation", validation)):
        art.splits[split] = [art.rows[i] for i in indices]
        art.split_tokens[split] = [art.tokens[i] for i in indices]


def _eval_split(evals: _Artifact, prompts: _Artifact, derived: bool, config: PrepareConfig) -> None:
    """Evaluation prompts come from their own files or, without any, from the prompts'
    validation split (with no references); a warning when that leaves prompts but no
    evaluation prompts (the evaluation stage would have nothing to compare on)."""
    if not derived:
        evals.splits["test"], evals.split_tokens["test"] = evals.rows, evals.tokens
        return
    evals.derived_from = "prompts/validation"
    evals.sources = list(prompts.sources)
    evals.splits["test"] = [
        {"prompt": row["prompt"], "reference": None} for row in prompts.splits["validation"]
    ]
    evals.split_tokens["test"] = list(prompts.split_tokens["validation"])
    if prompts.rows and not evals.splits["test"]:
        log.warning(
            "eval_prompts: no files given and the prompts' validation split is empty "
            "(validation_fraction=%s, %d prompts), so eval_prompts is written empty; give "
            "eval prompt files or a validation_fraction above 0",
            config.validation_fraction, len(prompts.rows),
        )  # fmt: skip


def _unpair_preferences(unpaired: _Artifact, preferences: _Artifact) -> None:
    """Each preference pair as two unpaired rows in the same split (a validation pair stays
    out of training), after the rows of the unpaired files. Each row's token count is its
    pair's (prompt plus the longer answer): an upper bound."""
    if not preferences.rows:
        raise DataError(
            ", ".join(preferences.sources) or "preferences",
            "unpaired_from_preferences is set but there are no preference pairs to split",
        )
    for split, rows in preferences.splits.items():
        for row, tokens in zip(rows, preferences.split_tokens[split], strict=True):
            unpaired.splits[split].extend(unpair(row))
            unpaired.split_tokens[split].extend([tokens, tokens])
            unpaired.from_preferences += 2
    unpaired.sources = [*unpaired.sources, *preferences.sources]
    unpaired.derived_from = "preferences" if not unpaired.rows else "files and preferences"


# --- write -------------------------------------------------------------------------------------


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
        "from_preferences": art.from_preferences,
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
