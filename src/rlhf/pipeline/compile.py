"""Compile the pipelines into KFP YAML packages (what the KFP UI uploads)."""

from __future__ import annotations

from pathlib import Path

from kfp import compiler

from rlhf.pipeline.pipelines import PIPELINES


def compile_all(out_dir: str | Path = "pipelines") -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fn in sorted(PIPELINES.items()):
        path = out_dir / f"{name}.yaml"
        compiler.Compiler().compile(fn, str(path))
        written.append(path)
    return written
