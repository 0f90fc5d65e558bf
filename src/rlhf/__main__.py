"""``python -m rlhf`` and ``torchrun --nproc_per_node N -m rlhf <stage> ...``: the CLI."""

from rlhf.cli import run

if __name__ == "__main__":
    run()
