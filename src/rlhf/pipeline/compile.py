"""Compile everything a cluster needs from the code, with one cluster config:

- ``<out>/<pipeline>.yaml``: the KFP package to upload in the UI or with ``rlhf submit``;
- ``<out>/k8s/<pipeline>.yaml``: the same pipeline as Kubernetes-native ``Pipeline`` and
  ``PipelineVersion`` resources (``kubectl apply -f``);
- ``<out>/k8s/submit-run.yaml``: a Job that submits a run from inside the cluster
  (``kubectl create -f``, once per run), and ``<out>/k8s/submitter-rbac.yaml``: its
  ServiceAccount and RBAC (``kubectl apply -f``, once);
- with stages on several nodes: ``<out>/k8s/trainjobs/<pipeline>-<stage>.yaml``, the TrainJob
  each such task creates (for review), and ``<out>/k8s/trainjob-rbac.yaml``, what the
  pipeline's ServiceAccount needs to run them (``kubectl apply -f``, once);
- with the cluster config's ``deploy``: ``<out>/k8s/inferenceservices/<pipeline>.yaml``, the
  InferenceService its deploy step creates (for review), ``<out>/k8s/inferenceservice-rbac.yaml``
  (what the pipeline's ServiceAccount needs for it) and ``<out>/k8s/serving-account.yaml`` (the
  predictor's ServiceAccount, naming the S3 Secret);
- ``<components>/<component>.yaml``: each stage's component spec, for reuse in other pipelines.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from pathlib import Path

from kfp import compiler
from kfp.dsl.base_component import BaseComponent

from rlhf import __version__
from rlhf.config import DeployConfig
from rlhf.pipeline import cluster, components, k8s_manifests
from rlhf.pipeline.inferenceservice import inferenceservice_manifest
from rlhf.pipeline.pipelines import PIPELINE_NAME, PIPELINES, get_pipeline, stage_sections
from rlhf.stages.specs import STAGES

_SDK_VERSION_LINE = re.compile(r"^\s*sdkVersion:.*$", re.MULTILINE)


def without_sdk_version(package_text: str) -> str:
    """A compiled package or manifest less the kfp release kfp stamps into it (``sdkVersion``,
    at any depth): a kfp patch release (2.17.0 -> 2.17.3) changes that and no step."""
    return _SDK_VERSION_LINE.sub("", package_text)


def k8s_name(pipeline: str) -> str:
    """Pipeline ``pipeline``'s name as a Kubernetes resource's: ``online_dpo`` ->
    ``online-dpo`` (no underscores in Kubernetes names)."""
    return pipeline.replace("_", "-")


def version_name(pipeline: str, package_text: str) -> str:
    """A pipeline version's name: the package version and a digest of the compiled package, so
    the same code and cluster config give the same version and any change gives a new one
    (KFP versions are immutable). The kfp release stamped into the package (``sdkVersion``) is
    left out of the digest: a kfp patch release changes no step of the pipeline.
    A valid Kubernetes name: ``rlhf-0-1-0-1a2b3c4d5e``."""
    digest = hashlib.sha256(without_sdk_version(package_text).encode("utf-8")).hexdigest()[:10]
    return f"{k8s_name(pipeline)}-{__version__.replace('.', '-')}-{digest}".lower()


def compile_package(name: str, path: str | Path, config: cluster.ClusterConfig) -> Path:
    """Compile pipeline ``name`` with ``config`` into the KFP package ``path``."""
    compiler.Compiler().compile(cluster.build(get_pipeline(name), config), str(path))
    return Path(path)


def _write(path: Path, text: str) -> Path:
    """Write through a temporary file and a rename: no half-written manifest on a crash."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def _k8s_manifest(name: str, version: str, config: cluster.ClusterConfig) -> str:
    options = compiler.KubernetesManifestOptions(
        pipeline_name=k8s_name(name),
        pipeline_version_name=version,
        include_pipeline_manifest=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "manifest.yaml"
        compiler.Compiler().compile(
            cluster.build(get_pipeline(name), config),
            str(path),
            kubernetes_manifest_format=True,
            kubernetes_manifest_options=options,
        )
        return path.read_text(encoding="utf-8")


def stage_components() -> dict[str, BaseComponent]:
    """Every component defined in components.py, by its function name."""
    return {name: obj for name, obj in vars(components).items() if isinstance(obj, BaseComponent)}


def compile_components(out_dir: str | Path = "components") -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, component in sorted(stage_components().items()):
        path = out_dir / f"{name}.yaml"
        with tempfile.TemporaryDirectory() as tmp:
            compiler.Compiler().compile(component, f"{tmp}/c.yaml")
            written.append(_write(path, Path(f"{tmp}/c.yaml").read_text(encoding="utf-8")))
    return written


def compile_trainjobs(k8s_dir: Path, config: cluster.ClusterConfig) -> list[Path]:
    """For every stage with ``nodes > 1`` in every pipeline, the TrainJob its task creates
    (``trainjobs/<pipeline>-<stage>.yaml``, checked against the Trainer API), and the RBAC the
    pipeline's ServiceAccount needs for them; files an earlier compile left for stages that no
    longer run on several nodes are removed."""
    written = []
    for name in sorted(PIPELINES):
        for stage in stage_sections(name):
            if stage not in config.stages or config.stages[stage].nodes < 2:
                continue
            launch = cluster.node_launch(config, stage)
            manifest = launch.manifest(
                run_id=k8s_manifests.RUN_ID_PLACEHOLDER, stage=stage, namespace="default"
            )
            text = k8s_manifests.trainjob_review_manifest(name, stage, manifest)
            written.append(_write(k8s_dir / "trainjobs" / f"{name}-{stage}.yaml", text))
    rbac = k8s_dir / "trainjob-rbac.yaml"
    if written:
        text = k8s_manifests.trainjob_rbac_manifest(config.pipeline_service_account)
        written.append(_write(rbac, text))
    for stale in [*(k8s_dir / "trainjobs").glob("*.yaml"), rbac]:
        if stale.exists() and stale not in written:
            stale.unlink()
    return written


def compile_inferenceservices(k8s_dir: Path, config: cluster.ClusterConfig) -> list[Path]:
    """With the cluster config's ``deploy``: for every pipeline with a deploy step, the
    InferenceService it creates (``inferenceservices/<pipeline>.yaml``, with the deploy
    config's defaults), the RBAC the pipeline's ServiceAccount needs for it and the predictor's
    ServiceAccount; without it, files an earlier compile left are removed."""
    written = []
    if config.deploy:
        deploy = DeployConfig()
        storage_uri = (
            f"{k8s_manifests.PUBLISH_TO_PLACEHOLDER}/{k8s_manifests.RUN_ID_PLACEHOLDER}/"
            f"{STAGES['deploy'].publish_folder}"
        )
        for name in sorted(PIPELINES):
            if "deploy" not in stage_sections(name):
                continue
            manifest = inferenceservice_manifest(
                name=deploy.name, namespace="default", storage_uri=storage_uri,
                predictor=cluster.predictor(config), run_id=k8s_manifests.RUN_ID_PLACEHOLDER,
                runtime=deploy.runtime, args=deploy.server_args,
                min_replicas=deploy.min_replicas, max_replicas=deploy.max_replicas,
            )  # fmt: skip
            text = k8s_manifests.inferenceservice_review_manifest(name, manifest)
            written.append(_write(k8s_dir / "inferenceservices" / f"{name}.yaml", text))
        rbac = k8s_manifests.inferenceservice_rbac_manifest(config.pipeline_service_account)
        written.append(_write(k8s_dir / "inferenceservice-rbac.yaml", rbac))
        if config.serving_service_account:
            account = k8s_manifests.serving_account_manifest(
                config.serving_service_account, s3_secret(config)
            )
            written.append(_write(k8s_dir / "serving-account.yaml", account))
    generated = [k8s_dir / "inferenceservice-rbac.yaml", k8s_dir / "serving-account.yaml"]
    for stale in [*(k8s_dir / "inferenceservices").glob("*.yaml"), *generated]:
        if stale.exists() and stale not in written:
            stale.unlink()
    return written


def s3_secret(config: cluster.ClusterConfig) -> str:
    """The Secret the cluster config reads the S3 credentials from (AWS_ACCESS_KEY_ID)."""
    for source in config.secrets:
        if source.name and "AWS_ACCESS_KEY_ID" in source.keys:
            return source.name
    raise ValueError(
        "cluster config: deploy: no Secret in secrets has the key AWS_ACCESS_KEY_ID: the "
        "predictor's ServiceAccount must name the Secret with the S3 credentials (or set "
        'serving_service_account to "" for a bucket that needs none)'
    )


def compile_all(
    out_dir: str | Path = "pipelines",
    config: cluster.ClusterConfig | None = None,
    components_dir: str | Path | None = None,
) -> list[Path]:
    """Write every pipeline's package and k8s manifests, the submit Job, and (when
    ``components_dir`` is given) the component specs. Returns the files written."""
    config = config or cluster.ClusterConfig()
    out_dir = Path(out_dir)
    written = []
    for name in sorted(PIPELINES):
        with tempfile.TemporaryDirectory() as tmp:
            text = compile_package(name, Path(tmp) / "p.yaml", config).read_text("utf-8")
        written.append(_write(out_dir / f"{name}.yaml", text))
        manifest = _k8s_manifest(name, version_name(name, text), config)
        written.append(_write(out_dir / "k8s" / f"{name}.yaml", manifest))
    names = sorted(PIPELINES, key=lambda name: (name != PIPELINE_NAME, name))  # default first
    job = k8s_manifests.submit_job_manifest(config.image("cpu"), names)
    written.append(_write(out_dir / "k8s" / "submit-run.yaml", job))
    rbac = k8s_manifests.submitter_rbac_manifest()
    written.append(_write(out_dir / "k8s" / "submitter-rbac.yaml", rbac))
    written += compile_trainjobs(out_dir / "k8s", config)
    written += compile_inferenceservices(out_dir / "k8s", config)
    if components_dir is not None:
        written += compile_components(components_dir)
    return written
