"""Console logging for the CLI and the pipeline components: our messages at INFO, the
libraries' progress bars and load reports off."""

from __future__ import annotations

import logging
import os


def configure(verbose: bool = False) -> None:
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Our own handler on the "rlhf" logger: inside a KFP task the root logger is already
    # configured by the executor, so basicConfig would do nothing there.
    ours = logging.getLogger("rlhf")
    ours.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not ours.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
        )
        ours.addHandler(handler)
        ours.propagate = False
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    for noisy in ("alembic", "mlflow", "urllib3", "botocore", "boto3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
