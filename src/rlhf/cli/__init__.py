"""The ``rlhf`` command line (``main``; ``run`` is the process)."""

from rlhf.cli.main import build_parser, main, run

__all__ = ["build_parser", "main", "run"]
