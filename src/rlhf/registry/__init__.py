"""The MLflow Model Registry: register models, move aliases, fetch a version.

A registered version is an MLflow model (``rlhf.registry.layout``: the policy in the
transformers flavor, the reward model as a pyfunc model) that the evaluation stage builds from
the model folder it evaluated and logs into its own run (``registered/policy``,
``registered/reward_model``); the version's ``source`` is that artifact URI (with ``mlflow
server --artifacts-destination s3://...`` an ``mlflow-artifacts:`` URI the server proxies to
S3), so ``models:/<name>@champion`` loads with ``mlflow.transformers`` / ``mlflow.pyfunc`` and
serves with ``mlflow models serve``. Versions are made with ``MlflowClient.create_model_version``.
A fetched version is checked against its own ``manifest.json`` and cached by that manifest's
checksum, like an S3 download; ``fetch`` returns the Hugging Face folder inside it.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf import storage
from rlhf.redaction import redact
from rlhf.registry import layout
from rlhf.storage import cache, manifest

log = logging.getLogger("rlhf.registry")

CHAMPION = "champion"
CHALLENGER = "challenger"
MODEL_ARTIFACT_PATH = "model"  # where publish_model logs a model folder in its stage run
MAX_TAG_VALUE = 5000  # MLflow's limit on a model version tag value


@dataclass(frozen=True)
class Version:
    name: str
    version: str
    source: str


class ModelRegistry:
    """Registry operations on one MLflow tracking server, through an ``MlflowClient``."""

    def __init__(self, client: Any, tracking_uri: str) -> None:
        self.client = client
        self.tracking_uri = tracking_uri

    def by_alias(self, name: str, alias: str) -> Version | None:
        """The version of ``name`` holding ``alias``; None when the model or alias is unknown."""
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version_by_alias(name, alias)
        except MlflowException as e:
            # An unknown model is RESOURCE_DOES_NOT_EXIST; a known one without the alias is
            # INVALID_PARAMETER_VALUE (MLflow 3).
            if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise
        return Version(mv.name, str(mv.version), mv.source)

    def fetch(self, version: Version) -> Path:
        """The Hugging Face folder of a verified local copy of ``version`` (cached by its
        manifest's checksum): what ``models.load_causal_lm`` and ``RewardScorer.load`` read."""
        import mlflow

        where = f"models:/{version.name}/{version.version}"
        with tempfile.TemporaryDirectory(prefix="rlhf-registry-") as tmp:

            def download(rel: str) -> Path:
                return Path(
                    mlflow.artifacts.download_artifacts(
                        artifact_uri=f"{version.source.rstrip('/')}/{rel}",
                        dst_path=tempfile.mkdtemp(dir=tmp),
                        tracking_uri=self.tracking_uri,
                    )
                )

            data = download(manifest.MANIFEST).read_bytes()
            listing = manifest.parse(data, f"{where}/{manifest.MANIFEST}")
            model_dir = cache.cached_folder(
                data, listing, lambda rel, dest: shutil.move(download(rel), dest), where
            )
        return layout.hf_folder(model_dir, listing)

    def log_model(self, model_dir: Path, run_id: str, artifact_path: str) -> str:
        """Log a packaged MLflow model directory into ``run_id``; its artifact URI."""
        self.client.log_artifacts(run_id, str(model_dir), artifact_path)
        return f"{self.client.get_run(run_id).info.artifact_uri}/{artifact_path}"

    def register_model(
        self,
        name: str,
        folder: str,
        run_id: str,
        artifact_path: str,
        tags: Mapping[str, Any],
        save: Callable[[Path, Path], Path],
    ) -> Version:
        """A new version of ``name``: the model ``folder`` (local or ``s3://``) made into an
        MLflow model by ``save(local folder, destination)`` (``rlhf.modeling.mlflow_models``),
        logged into ``run_id`` under ``artifact_path`` (``layout``), tagged with where it came
        from."""
        local = storage.local_path(folder)
        try:  # the training stage's run, when it logged one (its manifest says)
            training_run = storage.read_manifest(local).get("mlflow_run_id")
        except storage.StorageError:
            training_run = None
        with tempfile.TemporaryDirectory(prefix="rlhf-registry-") as tmp:
            model_dir = save(local, Path(tmp) / "model")
            source = self.log_model(model_dir, run_id, artifact_path)
        extra = {"rlhf.source": folder, "rlhf.training_run": training_run or ""}
        return self.register(name, source, run_id, {**tags, **extra})

    def register(
        self,
        name: str,
        source: str,
        run_id: str | None,
        tags: Mapping[str, Any],
        description: str = "",
    ) -> Version:
        """A new version of ``name`` (created if needed) pointing at ``source``."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(name)
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        mv = self.client.create_model_version(
            name,
            source,
            run_id=run_id,
            tags={k: redact(str(v))[:MAX_TAG_VALUE] for k, v in tags.items()},
            description=description or None,
        )
        return Version(mv.name, str(mv.version), mv.source)

    def set_alias(self, version: Version, alias: str) -> None:
        self.client.set_registered_model_alias(version.name, alias, version.version)
