"""``python -m rlhf.cli``: the ``rlhf`` command."""

import sys

from rlhf.cli.main import main

sys.exit(main())
