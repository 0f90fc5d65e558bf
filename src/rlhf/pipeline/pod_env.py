"""Environment variables the cluster config (``cluster.py``, at compile time) sets on a task's
pod for the code that runs inside it (``component_runner.py``)."""

# How many processes the task's stage runs under torchrun: the pod's GPUs (``gpus`` > 1).
PROCESSES_ENV = "RLHF_PROCESSES"
