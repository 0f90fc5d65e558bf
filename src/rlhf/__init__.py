"""rlhf: RLHF training on Kubeflow Pipelines that also runs on a laptop."""

__version__ = "0.1.0"
