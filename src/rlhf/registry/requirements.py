"""The pip requirements a registered model is saved with: exact pins of what loading and
serving it needs, read from the installed distributions (the images install them from
constraints.txt, the repo's lock file). MLflow would otherwise infer them by importing
whatever the model's flavor might use (torchvision, which is not installed, among them)."""

from __future__ import annotations

from importlib import metadata

from packaging.version import Version

# The transformers flavor's text-generation pipeline (Jinja2: the chat template).
POLICY = ("mlflow", "torch", "transformers", "tokenizers", "safetensors", "Jinja2")
# The reward model's pyfunc runs rlhf's RewardScorer (bundled as code) on a pandas frame; the
# imports below rlhf.modeling.reward_scoring add boto3 (rlhf.storage) and PyYAML (rlhf.config).
REWARD_MODEL = (*POLICY, "pandas", "numpy", "boto3", "PyYAML")


def pinned(distributions: tuple[str, ...]) -> list[str]:
    """``name==version`` for each installed distribution. A local version label (torch's
    ``+cpu``) is dropped: it names the index the wheel came from, which pip cannot resolve
    from the requirement alone."""
    out = []
    for name in distributions:
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            raise RuntimeError(
                f"{name} is not installed; a registered model's requirements pin the installed "
                "version (pip install -c constraints.txt ...)"
            ) from None
        out.append(f"{name}=={Version(installed).public}")
    return out
