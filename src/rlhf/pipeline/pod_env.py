"""Names the cluster config (``cluster.py``, at compile time) puts on a task's pods, for the
code inside them (``component_runner.py``) and for the pods of a stage's TrainJob
(``trainjob.py``): labels and environment variables."""

# Pod label naming the stage: `kubectl get pods -l rlhf/stage=sft`.
STAGE_LABEL = "rlhf/stage"

# How many processes the task's stage runs under torchrun: the pod's GPUs (``gpus`` > 1).
PROCESSES_ENV = "RLHF_PROCESSES"

# A multi-node stage's TrainJob launch (``multi_node.NodeLaunch`` as JSON) on its task's pod.
TRAINJOB_ENV = "RLHF_TRAINJOB"

# Where the cluster config's checkpoint_volume is mounted on training pods and TrainJob nodes;
# set as CHECKPOINTS_ENV on a task's pod when it is mounted there.
CHECKPOINT_MOUNT = "/rlhf-checkpoints"
CHECKPOINTS_ENV = "RLHF_CHECKPOINT_ROOT"


def run_checkpoint_dir(pipeline_run: str, stage: str, root: str = CHECKPOINT_MOUNT) -> str:
    """A stage's checkpoints on the volume: one folder per run and stage, so a retried task
    finds its earlier attempt's checkpoints and another run never does."""
    return f"{root.rstrip('/')}/{pipeline_run}/{stage}"


# The deploy stage's predictor (``inferenceservice.Predictor`` as JSON) on its task's pod.
PREDICTOR_ENV = "RLHF_PREDICTOR"
