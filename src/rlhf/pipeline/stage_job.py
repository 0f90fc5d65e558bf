"""A stage run written down, so that several processes run the same one: a KFP task whose pod
has several GPUs launches ``torchrun --nproc_per_node N -m rlhf.pipeline.stage_job job.json``,
one process per GPU, and reads back the metrics rank 0 wrote.

The job holds what each rank needs and nothing secret: the stage's name, its config and
ports as JSON, and where the stage tracks (credentials stay in the environment the ranks
inherit from the task's pod).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from rlhf import storage
from rlhf.config import from_dict, to_dict
from rlhf.pipeline.pod_env import PROCESSES_ENV
from rlhf.stages.specs import get_stage
from rlhf.stages.tracked_run import run_tracked
from rlhf.training.distributed import is_main_process

log = logging.getLogger("rlhf.pipeline")


@dataclasses.dataclass
class StageJob:
    stage: str
    config: dict[str, Any]  # the stage config's fields (``to_dict``)
    inputs: dict[str, Any]  # the stage's *Inputs fields: paths or URIs
    outputs: dict[str, Any]  # the stage's *Outputs fields
    pipeline_run: str | None
    experiment: str
    track: bool
    tags: dict[str, str]  # set on the stage's MLflow run
    metrics_file: str = ""  # rank 0 writes the stage's metrics here (JSON); set by the launch

    @classmethod
    def of(cls, stage: str, config: Any, inputs: Any, outputs: Any, **context: Any) -> StageJob:
        return cls(stage, to_dict(config), dataclasses.asdict(inputs),
                   dataclasses.asdict(outputs), **context)  # fmt: skip

    def run(self) -> dict[str, float]:
        """This rank's part of the job; rank 0 writes the metrics file."""
        spec = get_stage(self.stage)
        config = from_dict(spec.config, self.config, f"{self.stage} job")
        metrics = run_tracked(
            spec, config, spec.inputs(**self.inputs), spec.outputs(**self.outputs),
            self.pipeline_run, self.experiment, self.track, self.tags,
        )  # fmt: skip
        if is_main_process():
            storage.atomic_write_text(Path(self.metrics_file), json.dumps(metrics))
        return metrics


def processes_per_pod() -> int:
    """How many processes this task's stage runs (``RLHF_PROCESSES``; 1 when unset)."""
    value = os.environ.get(PROCESSES_ENV, "1")
    try:
        count = int(value)
    except ValueError:
        raise ValueError(
            f"{PROCESSES_ENV}={value!r}: expected a whole number of processes"
        ) from None
    if count < 1:
        raise ValueError(f"{PROCESSES_ENV}={count}: expected at least 1 process")
    return count


def run_on_processes(job: StageJob, processes: int) -> dict[str, float]:
    """Run ``job`` as ``processes`` ranks under ``torchrun`` on this machine and return the
    metrics rank 0 wrote. A failing rank stops the others (torchrun) and raises here."""
    with tempfile.TemporaryDirectory(prefix=f"rlhf-{job.stage}-") as work:
        job = dataclasses.replace(job, metrics_file=str(Path(work) / "metrics.json"))
        job_file = Path(work) / "job.json"
        job_file.write_text(json.dumps(dataclasses.asdict(job)), encoding="utf-8")
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={processes}", "-m", "rlhf.pipeline.stage_job", str(job_file),
        ]  # fmt: skip
        log.info("%s: %d processes: %s", job.stage, processes, " ".join(command[1:]))
        done = subprocess.run(command, check=False)
        if done.returncode != 0:
            raise RuntimeError(
                f"{job.stage}: torchrun with {processes} processes exited with status "
                f"{done.returncode} (the failing rank's error is above)"
            )
        return json.loads(Path(job.metrics_file).read_text(encoding="utf-8"))


def main(argv: list[str]) -> int:
    from rlhf import log_setup

    log_setup.configure()
    data = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    StageJob(**data).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
