"""Console logging for the CLI and the pipeline components: our messages at INFO (DEBUG when
verbose), the libraries' progress bars, info logs and deprecation warnings off.

Real warnings stay: our own (``rlhf.*`` loggers at WARNING, such as the RL guards' entropy
collapse), and any library's logged warning or error."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import TextIO

VERBOSE_ENV = "RLHF_VERBOSE"  # "1": verbose (set by `rlhf run --verbose` for its tasks)
# Libraries whose FutureWarnings and DeprecationWarnings are for their callers' developers.
QUIET_WARNING_MODULES = r"(transformers|torch|datasets|huggingface_hub|tokenizers|mlflow|kfp|" \
    r"google|pydantic|sqlalchemy|alembic|peft|deepspeed|accelerate)(\..*)?$"  # fmt: skip


class _BarAwareHandler(logging.StreamHandler):
    """Writes records to the current ``sys.stderr``, above a live tqdm bar on it instead of
    through it. Looked up at each record, not kept from the first ``configure()``: a caller that
    swaps stderr (a test capturing it, a wrapper) would otherwise get writes to a closed file."""

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:  # StreamHandler.__init__ assigns one: not kept
        pass

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
        except Exception:
            self.handleError(record)


def configure(verbose: bool | None = None) -> None:
    """``verbose`` None: from ``RLHF_VERBOSE`` (a pipeline task inherits it from ``rlhf run``)."""
    if verbose is None:
        verbose = os.environ.get(VERBOSE_ENV) == "1"
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # MLflow's bar while it copies a folder into a model it saves (the registered reward model).
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow's "View run ... at: <url>" and "View experiment at: <url>" on stdout when each
    # stage's run ends on a tracking server: two lines per stage, the same experiment each time
    # (`rlhf run` names the parent run once).
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Our own handler on the "rlhf" logger: inside a KFP task the root logger is already
    # configured by the executor, so basicConfig would do nothing there.
    ours = logging.getLogger("rlhf")
    ours.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not ours.handlers:
        handler = _BarAwareHandler()
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
        )
        ours.addHandler(handler)
        ours.propagate = False
    import datasets
    import torch
    import transformers

    # Without a GPU DeepSpeed picks its CPU accelerator with a warning on stdout ("Setting
    # accelerator to CPU. If you have GPU ..."), printed in every CPU run that saves a model
    # (transformers imports DeepSpeed to unwrap it). Naming that choice gives the same
    # accelerator, silently.
    if "DS_ACCELERATOR" not in os.environ and not torch.cuda.is_available():
        os.environ["DS_ACCELERATOR"] = "cpu"

    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    for noisy in ("alembic", "mlflow", "urllib3", "botocore", "boto3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if verbose:
        return
    # MLflow resets its loggers' level from this variable when it is imported (its sqlite
    # store's "Creating initial MLflow database tables..." is INFO).
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # So does vLLM (rollout_backend: vllm) from this one, when it builds an engine.
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    # In a KFP task the executor's root handler prints every library's INFO records
    # ("Wrote executor output file", matplotlib's font cache): warnings and errors only.
    logging.getLogger().setLevel(logging.WARNING)
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=QUIET_WARNING_MODULES)
