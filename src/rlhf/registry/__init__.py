"""The MLflow Model Registry: register model folders, move aliases, fetch a version.

A registered version's ``source`` is the artifact URI of the model folder a training stage
logged into its MLflow run (``<run artifact_uri>/model``; with ``mlflow server
--artifacts-destination s3://...`` that is an ``mlflow-artifacts:`` URI the server proxies to
S3). MLflow 3's ``register_model`` does not take a plain folder, so versions are made with
``MlflowClient.create_model_version``. A fetched version is checked against its own
``manifest.json`` and cached by that manifest's checksum, like an S3 download.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf import storage
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
        """A verified local copy of ``version``'s model folder (cached by manifest checksum)."""
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
            return cache.cached_folder(
                data, listing, lambda rel, dest: shutil.move(download(rel), dest), where
            )

    def source_of(self, folder: str, current_run_id: str, copy_path: str) -> tuple[str, str]:
        """``(source, run_id)`` for registering a model folder: the artifacts its training
        stage logged (the manifest's ``mlflow_run_id``) when that run is on this server, else
        a copy logged now into ``current_run_id`` under ``copy_path``."""
        from mlflow.exceptions import MlflowException

        local = storage.local_path(folder)
        recorded = storage.read_manifest(local).get("mlflow_run_id")
        if recorded:
            try:
                if self.client.list_artifacts(recorded, MODEL_ARTIFACT_PATH):
                    run = self.client.get_run(recorded)
                    return f"{run.info.artifact_uri}/{MODEL_ARTIFACT_PATH}", recorded
            except MlflowException:
                pass
        log.info("registry: %s was not logged by a run on this server; logging a copy", folder)
        self.client.log_artifacts(current_run_id, str(local), copy_path)
        run = self.client.get_run(current_run_id)
        return f"{run.info.artifact_uri}/{copy_path}", current_run_id

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
            tags={k: str(v)[:MAX_TAG_VALUE] for k, v in tags.items()},
            description=description or None,
        )
        return Version(mv.name, str(mv.version), mv.source)

    def set_alias(self, version: Version, alias: str) -> None:
        self.client.set_registered_model_alias(version.name, alias, version.version)
