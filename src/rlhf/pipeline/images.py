"""Container images the components run in (see images/). On a cluster the image holds this
package; locally ``kfp.local.SubprocessRunner`` ignores the image and runs in this venv.

Two flavours, tagged ``<registry>/rlhf:<version>-<flavour>``: ``cpu`` for data preparation and
evaluation, ``cuda`` (PyTorch CUDA runtime and DeepSpeed) for the training stages. Which image a
stage uses on a cluster is a compile-time setting (``rlhf compile --cluster-config``, see
``cluster.py``); the defaults below are what the components are declared with.
"""

from __future__ import annotations

from rlhf import __version__

DEFAULT_REGISTRY = "ghcr.io/rlhf-project"
FLAVOURS = ("cpu", "cuda")


def image_ref(flavour: str, registry: str = DEFAULT_REGISTRY, tag: str = __version__) -> str:
    """``image_ref("cuda")`` -> ``ghcr.io/rlhf-project/rlhf:0.1.0-cuda``."""
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown image flavour {flavour!r}; known: {list(FLAVOURS)}")
    return f"{registry.rstrip('/')}/rlhf:{tag}-{flavour}"


CPU_IMAGE = image_ref("cpu")
CUDA_IMAGE = image_ref("cuda")
