"""Training checkpoints: everything needed to continue a killed run as if it never stopped.

A checkpoint is a folder ``step-00000123/`` holding ``state.pt`` (loop position, controllers,
and whatever else the stage adds), one folder per training engine (its weights and optimizer
state: ``engine.pt``, or DeepSpeed's files sharded by rank under ZeRO), each rank's RNG states
(``rng-<rank>.pt``) and ``meta.json``. It is written under a temporary name and renamed when
complete (by rank 0, after every rank has written its part), so a kill mid-save, of any rank,
never leaves a checkpoint that looks valid but is not. ``meta.json`` also records the fingerprint of the run that wrote
it (``training/fingerprint.py``), and :func:`resume_checkpoint` refuses a checkpoint whose
fingerprint differs from the current run's.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import torch

from rlhf.tracking import Tracker
from rlhf.training import distributed
from rlhf.training.errors import CheckpointMismatchError
from rlhf.training.fingerprint import fingerprint_differences

PREFIX = "step-"

log = logging.getLogger("rlhf.checkpoint")


def capture_rng() -> dict[str, Any]:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Stateful(Protocol):
    """What a checkpoint holds a part of: models, optimizers, schedulers, controllers."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


class FolderState(Protocol):
    """A part that writes itself into a folder of the checkpoint (an engine: under ZeRO each
    rank writes its own shard, so every rank calls these)."""

    def save_to(self, folder: Path) -> None: ...

    def load_from(self, folder: Path) -> None: ...


Part = Stateful | FolderState


class FieldsState:
    """``state_dict``/``load_state_dict`` for a dataclass of plain values, such as a loop's
    position (step, epoch, history), so that it is checkpointed like any other part."""

    def state_dict(self) -> dict[str, Any]:
        assert dataclasses.is_dataclass(self)
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)


def save_parts(
    root: str | os.PathLike,
    step: int,
    parts: Mapping[str, Part],
    keep: int,
    fingerprint: Mapping[str, Any],
) -> Path:
    """Checkpoint ``step``: engines into their own folders, every other part's
    ``state_dict()`` under its name, and each rank's RNG states. Every rank calls it;
    :func:`resume_parts` with the same ``parts`` restores exactly this."""
    world = distributed.launched_world()
    tmp = _empty_tmp(root, step) if world.is_main else _tmp_name(root, step)
    distributed.barrier()
    state = {}
    for name, part in parts.items():
        if _is_folder_state(part):
            part.save_to(tmp / name)
        else:
            state[name] = part.state_dict()
    torch.save(capture_rng(), tmp / f"rng-{world.rank}.pt")
    distributed.barrier()  # every rank's files are written before the folder is renamed
    final = Path(root) / f"{PREFIX}{step:08d}"
    if world.is_main:
        _commit(tmp, final, state, step, keep, fingerprint)
    distributed.barrier()
    return final


def resume_parts(
    path: str | os.PathLike, parts: Mapping[str, Part], stage: str, tracker: Tracker
) -> int:
    """Load checkpoint ``path`` (written by :func:`save_parts` with the same ``parts``) into
    ``parts`` and restore this rank's RNG states; tag the run with the step resumed from and
    return it."""
    path = Path(path)
    world = distributed.launched_world()
    state = load_checkpoint(path)
    for name, part in parts.items():
        if _is_folder_state(part):
            part.load_from(path / name)
        else:
            part.load_state_dict(state[name])
    rng = path / f"rng-{world.rank}.pt"
    if not rng.exists():
        raise FileNotFoundError(
            f"{path}: no RNG state for rank {world.rank}; the checkpoint was written by a run "
            "with fewer ranks. Resume with the same number of processes."
        )
    restore_rng(torch.load(rng, weights_only=True))
    step = int(json.loads((path / "meta.json").read_text(encoding="utf-8"))["step"])
    log.info("%s: resuming from %s (step %d)", stage, path, step)
    tracker.set_tags({"resumed_from_step": step})
    return step


def _is_folder_state(part: Any) -> bool:
    return hasattr(part, "save_to") and hasattr(part, "load_from")


def _tmp_name(root: str | os.PathLike, step: int) -> Path:
    return Path(root) / f".tmp-{PREFIX}{step:08d}"


def _empty_tmp(root: str | os.PathLike, step: int) -> Path:
    """An empty folder to write checkpoint ``step`` into before it is renamed."""
    tmp = _tmp_name(root, step)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def _commit(
    tmp: Path,
    final: Path,
    state: dict[str, Any],
    step: int,
    keep: int,
    fingerprint: Mapping[str, Any] | None,
) -> None:
    """Write ``state.pt`` and ``meta.json`` into ``tmp``, rename it to ``final`` and keep only
    the newest ``keep`` checkpoints beside it (all when ``keep`` <= 0)."""
    torch.save(state, tmp / "state.pt")
    meta: dict[str, Any] = {"step": step}
    if fingerprint is not None:
        meta["run"] = dict(fingerprint)
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(final.parent)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(
    root: str | os.PathLike,
    step: int,
    state: dict[str, Any],
    keep: int = 2,
    fingerprint: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``state`` as checkpoint ``step`` under ``root`` and keep only the newest ``keep``;
    ``fingerprint`` (``fingerprint.run_fingerprint``) goes into ``meta.json`` as ``"run"``."""
    final = Path(root) / f"{PREFIX}{step:08d}"
    _commit(_empty_tmp(root, step), final, state, step, keep, fingerprint)
    return final


def list_checkpoints(root: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    done = [p for p in root.glob(f"{PREFIX}*") if (p / "meta.json").exists()]
    return sorted(done, key=lambda p: p.name)


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def resume_checkpoint(root: str | os.PathLike, fingerprint: Mapping[str, Any]) -> Path | None:
    """The newest complete checkpoint under ``root`` to resume from, or None when there is none.

    Raises :class:`CheckpointMismatchError` when its recorded fingerprint differs from
    ``fingerprint`` (the current run's), naming each differing field. A checkpoint written
    before fingerprints were recorded is resumed from with a warning."""
    latest = latest_checkpoint(root)
    if latest is None:
        return None
    meta = json.loads((latest / "meta.json").read_text(encoding="utf-8"))
    recorded = meta.get("run")
    if recorded is None:
        log.warning(
            "%s records no run fingerprint (written by an older version): resuming from it "
            "without checking that it belongs to this run's config and inputs",
            latest,
        )
        return latest
    differences = fingerprint_differences(recorded, fingerprint)
    if differences:
        raise CheckpointMismatchError(Path(root), latest, differences)
    return latest


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    # weights_only: tensors, numbers, strings and containers only; no arbitrary objects.
    return torch.load(Path(path) / "state.pt", map_location=map_location, weights_only=True)


def checkpoint_root(out: str | os.PathLike, configured: str | None) -> Path:
    """Checkpoints go where the config says, else beside the output as ``<out>.checkpoints``."""
    return Path(configured) if configured else Path(f"{os.fspath(out).rstrip('/')}.checkpoints")
