"""The ``rlhf`` command line (``main``)."""

from rlhf.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
