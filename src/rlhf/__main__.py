"""``python -m rlhf`` and ``torchrun --nproc_per_node N -m rlhf <stage> ...``: the CLI."""

import sys

from rlhf.cli import main

if __name__ == "__main__":
    sys.exit(main())
