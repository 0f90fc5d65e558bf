"""The layout of a registered version: an MLflow model directory (built by
``rlhf.modeling.mlflow_models``) with our ``manifest.json`` covering all of it, so the registry
verifies and caches a fetched version by that manifest like any artifact:

    policy (transformers flavor)              reward model (pyfunc, a model from code)
      MLmodel, requirements.txt, ...            MLmodel, requirements.txt, reward_pyfunc.py
      model/       the policy's HF folder       artifacts/<name>/  the reward model's HF folder
      components/tokenizer/                     code/rlhf/         the package, for the pyfunc
      manifest.json                             manifest.json

The manifest's ``hf_folder`` field names the Hugging Face folder inside, which is what our own
loaders read (``models.load_causal_lm``, ``RewardScorer.load``); a version registered before
MLflow models (a plain HF folder) has no such field and is that folder itself. The evaluation
logs each into its run under ``registered/policy`` / ``registered/reward_model``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rlhf import storage
from rlhf.storage import manifest

HF_FOLDER = "hf_folder"  # manifest field: the Hugging Face folder inside the MLflow model
POLICY_ARTIFACT_PATH = "registered/policy"  # in the evaluation run
REWARD_MODEL_ARTIFACT_PATH = "registered/reward_model"
POLICY_ARTIFACT = "registered_policy"  # the manifest's "artifact"
REWARD_MODEL_ARTIFACT = "registered_reward_model"


def hf_folder(model_dir: Path, fields: Mapping[str, Any]) -> Path:
    """The Hugging Face folder of a fetched version, from its manifest ``fields``."""
    rel = fields.get(HF_FOLDER)
    if not rel:
        return model_dir
    manifest.check_relative(str(rel), f"{model_dir}/{manifest.MANIFEST}: {HF_FOLDER}")
    return model_dir / str(rel)


def write_manifest(model_dir: Path, artifact: str, hf: str, source: str) -> None:
    """The version's manifest, last: every file of ``model_dir``, where its HF folder is, the
    folder it was built from, and what that folder's own manifest says it was trained from."""
    fields: dict[str, Any] = {"artifact": artifact, HF_FOLDER: hf, "source": source}
    try:
        recorded = storage.read_manifest(model_dir / hf)
    except storage.StorageError:
        recorded = {}
    for key in ("artifact", "mlflow_run_id", "data_sha256"):
        if recorded.get(key):
            fields[f"model_{key}"] = recorded[key]
    storage.write_manifest(model_dir, fields)
