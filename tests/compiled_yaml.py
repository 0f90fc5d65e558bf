"""Compare compiled KFP YAML by what the code defines, not by the kfp release that wrote it."""

import yaml

from rlhf.pipeline.compile import without_sdk_version


def load_without_sdk_version(text: str) -> list:
    """The YAML documents of ``text`` less ``sdkVersion`` (``compile.without_sdk_version``)."""
    return list(yaml.safe_load_all(without_sdk_version(text)))
