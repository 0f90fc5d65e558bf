"""The fixed cost of a stage under ``kfp.local``: a one-task pipeline whose component does
nothing, run as ``rlhf run`` runs pipelines (``SubprocessRunner(use_venv=False)``), timed
round trip. Only the project has this cost, so it has no TRL or bare contender."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench_inputs import Inputs


def ours(inputs: Inputs, scratch: Path) -> dict[str, Any]:
    from kfp import dsl, local

    @dsl.component
    def nothing():  # kfp reads the annotations: none here (they would be strings)
        pass

    @dsl.pipeline(name="nothing")
    def pipeline():
        nothing()

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(scratch))
    started = time.perf_counter()
    pipeline()
    return {"seconds": time.perf_counter() - started, "units": 1, "unit": "tasks"}
