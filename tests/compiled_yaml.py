"""Compare compiled KFP YAML by what the code defines, not by the kfp release that wrote it."""

from typing import Any

import yaml


def _strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k != "sdkVersion"}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def load_without_sdk_version(text: str) -> list:
    """The YAML documents of ``text`` less ``sdkVersion`` at any depth: a kfp patch release
    (2.17.0 -> 2.17.3, which a fresh install picks up) changes that stamp and nothing else."""
    return [_strip(doc) for doc in yaml.safe_load_all(text)]
