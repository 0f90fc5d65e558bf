"""The ``sample_candidates`` stage: a labelling batch of K candidate answers per prompt from one
or more models (``rlhf label sample``, the KFP component, the ``collect`` pipeline).

The batch's manifest records what made it: the prompts, each model (its source name and URI)
with its share of K, and the sampling settings; the sampling itself is
``rlhf.labelling.sampling``."""

from __future__ import annotations

import logging

from rlhf.config import SampleConfig, to_dict
from rlhf.labelling.batch import write_batch
from rlhf.labelling.sampling import model_names, quotas, read_prompts, sample_candidates
from rlhf.stages.specs import BatchOutputs, SampleInputs
from rlhf.tracking import Tracker

__all__ = ["BatchOutputs", "SampleInputs", "run"]

log = logging.getLogger("rlhf.labelling")
# What the manifest records of how the answers were drawn (the rest is how it ran).
_SAMPLING_SETTINGS = ("k", "seed", "temperature", "top_p", "max_new_tokens", "redraws",
                      "chat_template", "max_length")  # fmt: skip


def run(
    config: SampleConfig,
    inputs: SampleInputs,
    outputs: BatchOutputs,
    tracker: Tracker | None = None,
) -> dict[str, float]:
    tracker = tracker or Tracker()
    uris = [inputs.model, *(inputs.more_models or [])] if inputs.model else []
    shares = quotas(config.k, len(uris))  # fails before any model loads
    prompts = read_prompts(inputs.prompts, config.max_prompts)
    tracker.log_params({f"candidates.{k}": v for k, v in to_dict(config).items()})
    tracker.log_params({"candidates.models": ",".join(uris), "prompts": inputs.prompts})
    sampled = sample_candidates(uris, prompts, config)
    fields = {
        "prompts": str(inputs.prompts),
        "models": [
            {"source": name, "uri": str(uri), "candidates_per_task": share}
            for name, uri, share in zip(model_names(uris), uris, shares, strict=True)
        ],
        "sampling": {name: getattr(config, name) for name in _SAMPLING_SETTINGS},
        "counts": sampled.counts,
    }
    write_batch(sampled.tasks, outputs.batch, fields)
    if config.publish_to:  # written again, not copied: the output may itself be an s3:// URI
        write_batch(sampled.tasks, config.publish_to, fields)
        tracker.set_tags({"rlhf.published.candidates": config.publish_to})
    tracker.log_metrics(sampled.counts)
    return sampled.counts
