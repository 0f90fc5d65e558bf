"""The flags several commands share: config and --set, verbosity, KFP connection, pipeline
choice, cluster config, submission."""

from __future__ import annotations

import argparse
from collections.abc import Iterator


def add_config_flags(p: argparse.ArgumentParser, section: str) -> None:
    p.add_argument(
        "--config",
        help=f"YAML file; the stage reads its fields from the top-level '{section}:' section",
    )
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override one config field (repeat)"
    )
    p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    p.add_argument("--experiment", default="rlhf", help="MLflow experiment (default: rlhf)")
    add_verbose_flag(p)


def add_verbose_flag(p: argparse.ArgumentParser) -> None:
    # SUPPRESS: without the flag here, the global `rlhf -v` still counts.
    p.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
        help="debug logs, library logs and (rlhf run) KFP's own output: executor input and "
        "output, per-task banners",
    )  # fmt: skip


KFP_EPILOG = """\
connecting to KFP:
  --host, else $KF_PIPELINES_ENDPOINT (e.g. http://localhost:8080 after
  `kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80`); in a pod with neither, the
  in-cluster service and the pod's ServiceAccount token ($KF_PIPELINES_SA_TOKEN_PATH).
  A bearer token: --existing-token, or better $KF_PIPELINES_TOKEN (kept out of `ps`).
  Multi-user KFP: --namespace names your profile namespace.
"""
CRON_HELP = """\
KFP cron expressions have 6 fields, seconds first:
  second minute hour day-of-month month day-of-week
  '0 0 3 * * *'    every day at 03:00:00
  '0 30 2 * * MON' every Monday at 02:30:00
  '0 0 */6 * * *'  every 6 hours
A crontab expression has 5 fields: '0 3 * * *' becomes '0 0 3 * * *'."""


def add_kfp_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--host", help="KFP API endpoint (default: $KF_PIPELINES_ENDPOINT, or in-cluster)"
    )
    p.add_argument(
        "--existing-token", help="bearer token for the KFP API (prefer $KF_PIPELINES_TOKEN)"
    )
    p.add_argument("--namespace", help="multi-user KFP: your profile namespace")
    p.add_argument(
        "--insecure", action="store_true", help="do not verify the server's TLS certificate"
    )


def add_cluster_config_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cluster-config",
        help="YAML with per-stage images, resources, GPUs, secrets, retries "
        "(docs/configuration.md; default: the built-in defaults)",
    )


class PipelineNames:
    """The ``choices`` of ``--pipeline``: the names in ``PIPELINES``, read only when argparse
    checks a given name or prints help. Importing the pipelines imports kfp (about a second),
    which ``rlhf --help`` and the stage commands do without."""

    @staticmethod
    def _names() -> list[str]:
        from rlhf.pipeline.pipelines import PIPELINES

        return sorted(PIPELINES)

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())


def add_pipeline_flag(p: argparse.ArgumentParser, verb: str) -> None:
    # Default None: main() fills in PIPELINE_NAME (imported only by the commands that use it).
    p.add_argument(
        "--pipeline",
        choices=PipelineNames(),
        metavar="NAME",
        help=f"which algorithm's pipeline to {verb}: %(choices)s (default: ppo)",
    )


def add_submission_flags(p: argparse.ArgumentParser) -> None:
    add_kfp_flags(p)
    add_pipeline_flag(p, "submit")
    p.add_argument(
        "--config", help="run config: the YAML of `rlhf run` (sections data, pipeline, sft, ...)"
    )
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override one field")
    add_cluster_config_flag(p)
    p.add_argument("--package", help="upload this compiled package instead of compiling the code")
    p.add_argument("--experiment", default="rlhf", help="KFP experiment (default: rlhf)")
    p.add_argument(
        "--service-account", default="", help="Kubernetes ServiceAccount of the run's pods"
    )
