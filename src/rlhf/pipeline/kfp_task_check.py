"""A cheaper form of one kfp check that made building every pipeline slow.

kfp 2.17's ``PipelineTask._ensure_container_spec_exists`` runs before every task setting
(image, CPU, memory, GPU, environment variables ...) and calls ``inspect.stack()`` only to name
its caller in an error message. ``inspect.stack()`` reads the source context of every frame on
the stack, looking each file up through ``inspect.getmodule`` over all of ``sys.modules``; with
torch and transformers imported that cost ~0.3 s per call, and building the six pipelines makes
~500 such calls: ``rlhf compile`` spent 167 of its 175 s there (cProfile, 2026-12-03), and
importing ``rlhf.pipeline.pipelines`` (which builds each pipeline once) ~9 s.

:func:`install` replaces the method with one that does the same check and raises the same
error, naming the caller from its frame (``sys._getframe``) instead of the whole stack.
"""

from __future__ import annotations

import sys

from kfp.dsl import pipeline_task


def _ensure_container_spec_exists(self: pipeline_task.PipelineTask) -> None:
    """kfp's check, with the caller's name read from one frame."""
    if self.container_spec is None:
        caller_method_name = sys._getframe(1).f_code.co_name
        raise ValueError(
            f"{caller_method_name} can only be used on single-step components, not pipelines "
            "used as components, or special components like importers."
        )


def install() -> None:
    """Use the cheaper check for every PipelineTask (idempotent). A kfp without the method
    (a later release that changed it) is left as it is."""
    if hasattr(pipeline_task.PipelineTask, "_ensure_container_spec_exists"):
        pipeline_task.PipelineTask._ensure_container_spec_exists = _ensure_container_spec_exists
