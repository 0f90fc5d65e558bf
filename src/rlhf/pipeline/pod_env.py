"""Names the cluster config (``cluster.py``, at compile time) puts on a task's pods, for the
code inside them (``component_runner.py``) and for the pods of a stage's TrainJob
(``trainjob.py``): labels and environment variables."""

# Pod label naming the stage: `kubectl get pods -l rlhf/stage=sft`.
STAGE_LABEL = "rlhf/stage"

# How many processes the task's stage runs under torchrun: the pod's GPUs (``gpus`` > 1).
PROCESSES_ENV = "RLHF_PROCESSES"
