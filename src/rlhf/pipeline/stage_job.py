"""A stage run written down, so that several processes run the same one: a KFP task whose pod
has several GPUs launches ``torchrun --nproc_per_node N -m rlhf.pipeline.stage_job job.json``,
one process per GPU, and reads back the metrics rank 0 wrote; the nodes of a multi-node stage's
TrainJob run the same command on a job file in object storage (``multi_node.py``).

The job holds what each rank needs and nothing secret: the stage's name, its config and
ports as JSON, and where the stage tracks (credentials stay in the environment the ranks
inherit from the task's pod). Its ports, and the metrics file, may be ``s3://`` URIs: the
ranks of a node download the inputs once, and rank 0 publishes the outputs and the metrics
there when the stage ends.
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
from rlhf.training.distributed import end_process, is_main_process

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
    metrics_file: str = ""  # rank 0 writes the stage's metrics here (JSON; a path or s3:// URI)

    @classmethod
    def of(cls, stage: str, config: Any, inputs: Any, outputs: Any, **context: Any) -> StageJob:
        return cls(stage, to_dict(config), dataclasses.asdict(inputs),
                   dataclasses.asdict(outputs), **context)  # fmt: skip

    def run(self) -> dict[str, float]:
        """This rank's part of the job; rank 0 writes the metrics file (and publishes the
        outputs given as ``s3://`` URIs)."""
        spec = get_stage(self.stage)
        config = from_dict(spec.config, self.config, f"{self.stage} job")
        inputs = _local_inputs(self.inputs)
        outputs = {port: _local_output(self.stage, port, value)
                   for port, value in self.outputs.items()}  # fmt: skip
        metrics = run_tracked(
            spec, config, spec.inputs(**inputs), spec.outputs(**outputs),
            self.pipeline_run, self.experiment, self.track, self.tags,
        )  # fmt: skip
        if is_main_process():
            for port, value in self.outputs.items():
                if value and storage.is_s3(value) and Path(outputs[port]).exists():
                    storage.publish(outputs[port], value)
            _write_metrics(self.metrics_file, metrics)
        return metrics


def _local_inputs(inputs: dict[str, Any]) -> dict[str, Any]:
    """The inputs with each ``s3://`` URI replaced by its verified local copy. The ranks of one
    machine take turns (the cache's lock): one downloads, the others find it cached."""
    remote = {k: v for k, v in inputs.items() if isinstance(v, str) and storage.is_s3(v)}
    if not remote:
        return inputs
    with storage.cache_lock():
        return {**inputs, **{k: str(storage.local_path(v)) for k, v in remote.items()}}


def _local_output(stage: str, port: str, value: Any) -> Any:
    """Where this rank writes an output: the path given, or for an ``s3://`` URI a folder in
    the node's temporary space that rank 0 publishes when the stage ends."""
    if value and storage.is_s3(value):
        return str(Path(tempfile.gettempdir()) / f"rlhf-{stage}" / port)
    return value


def _write_metrics(destination: str, metrics: dict[str, float]) -> None:
    text = json.dumps(metrics)
    if not storage.is_s3(destination):
        storage.atomic_write_text(Path(destination), text)
        return
    with tempfile.TemporaryDirectory() as work:
        local = Path(work) / "metrics.json"
        local.write_text(text, encoding="utf-8")
        storage.publish(local, destination)


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


def torchrun_command(job_file: str, processes: int) -> list[str]:
    """The command that runs ``job_file`` as ``processes`` ranks on this machine."""
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={processes}", "-m", "rlhf.pipeline.stage_job", job_file,
    ]  # fmt: skip


def run_on_processes(job: StageJob, processes: int) -> dict[str, float]:
    """Run ``job`` as ``processes`` ranks under ``torchrun`` on this machine and return the
    metrics rank 0 wrote. A failing rank stops the others (torchrun) and raises here."""
    with tempfile.TemporaryDirectory(prefix=f"rlhf-{job.stage}-") as work:
        job = dataclasses.replace(job, metrics_file=str(Path(work) / "metrics.json"))
        job_file = Path(work) / "job.json"
        job_file.write_text(json.dumps(dataclasses.asdict(job)), encoding="utf-8")
        command = torchrun_command(str(job_file), processes)
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
    # A path, or an s3:// URI (a TrainJob's nodes); every rank of a node reads the same copy.
    with storage.cache_lock():
        job_file = storage.local_path(argv[0])
    data = json.loads(job_file.read_text(encoding="utf-8"))
    StageJob(**data).run()
    return 0


if __name__ == "__main__":
    end_process(main(sys.argv[1:]))
