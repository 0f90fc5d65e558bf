"""``python -m rlhf.cli``: the ``rlhf`` command."""

from rlhf.cli.main import run

run()
