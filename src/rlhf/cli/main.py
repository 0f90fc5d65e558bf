"""The ``rlhf`` command: one subcommand per stage (``stage_commands.py``, made from the stage
specs) and per pipeline action (``pipeline_commands.py``); here the parser and the exit
statuses. Bad input data exits with status 2 and a message naming the file, the row and the
field; a failed run or request with 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import NoReturn

from rlhf import __version__, log_setup
from rlhf.cli.candidate_commands import add_candidate_commands
from rlhf.cli.judge_command import add_judge_command
from rlhf.cli.label_commands import add_label_commands
from rlhf.cli.pipeline_commands import add_pipeline_commands
from rlhf.cli.stage_commands import add_stage_commands

log = logging.getLogger("rlhf")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlhf", description="RLHF training: SFT, reward model and more, locally or on KFP."
    )
    parser.add_argument("--version", action="version", version=f"rlhf {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true")
    # DeepSpeed's launcher puts --local_rank=N before the command; the rank comes from the
    # environment (LOCAL_RANK), as under torchrun.
    parser.add_argument("--local_rank", type=int, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)

    add_stage_commands(sub)
    add_pipeline_commands(sub)
    add_candidate_commands(add_label_commands(sub))
    add_judge_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log_setup.configure(args.verbose)
    if getattr(args, "pipeline", "") is None:  # rlhf run, submit, schedule create
        from rlhf.pipeline.pipelines import PIPELINE_NAME

        args.pipeline = PIPELINE_NAME
    from rlhf.data.errors import DataError
    from rlhf.redaction import redact
    from rlhf.storage import StorageError

    def fail(message: str, status: int) -> int:
        print(redact(f"rlhf {args.command}: {message}"), file=sys.stderr)
        return status

    # Imported only for the commands that raise them: the pipeline modules take seconds to
    # import, which every stage command (each rank of a torchrun launch) would pay.
    api_errors: tuple[type[BaseException], ...] = ()
    if args.command in ("submit", "schedule"):
        from kfp_server_api import ApiException

        api_errors = (ApiException,)
    run_errors: tuple[type[BaseException], ...] = ()
    if args.command == "run":
        from rlhf.pipeline.local_run import PipelineFailed

        run_errors = (PipelineFailed,)
    try:
        return args.fn(args)
    except api_errors as e:
        reason = getattr(e, "body", None) or getattr(e, "reason", "")
        return fail(f"the KFP API answered {e.status}: {reason}", 1)
    except run_errors as e:
        return fail(f"{e} (the failing task's log is above)", 1)
    except DataError as e:
        return fail(f"invalid data: {e}", 2)
    except (ValueError, FileNotFoundError) as e:
        return fail(str(e), 2)
    except StorageError as e:
        return fail(str(e), 1)


def run() -> NoReturn:
    """The ``rlhf`` process (the console script, ``python -m rlhf``, each rank of a ``torchrun``
    launch): ``main``'s status; after a stage in a process group, the process is ended the way
    ``end_process`` says."""
    status = main()
    if "rlhf.training.distributed" in sys.modules:  # a stage ran here (torch is loaded)
        from rlhf.training.distributed import end_process

        end_process(status)
    sys.exit(status)


if __name__ == "__main__":
    run()
