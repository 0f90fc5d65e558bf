"""Candidate answers for labelling: K answers per prompt drawn from one or more models.

K is the number of candidates per task *in all*: with M models each draws K // M, and the
first K % M models one more (K=4 from two models: two each; K=5: three and two), so a batch
compares models side by side without growing with the number of models. Within a task the
texts must differ (ranking two identical answers says nothing): an answer that repeats another
candidate's text, or is empty, is drawn again, by the model that drew it, for up to
``redraws`` rounds. A task still short after that keeps its distinct answers if it has at
least 2 (fewer than K; counted as ``tasks_short``), and is dropped with fewer (counted as
``tasks_dropped``; a warning names it).

Prompts are rendered and encoded exactly as the stages render them (``encode_prompt``:
chat template or plain text), and sampled with the rollout sampler of PPO, GRPO and the
evaluation (``sample_responses``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import set_seed

from rlhf.config import SampleConfig
from rlhf.data.errors import EmptyInput
from rlhf.data.formats import normalise_row
from rlhf.data.readers import read_rows
from rlhf.labelling.batch import Candidate, Message, Task
from rlhf.modeling import models
from rlhf.modeling.encoding import encode_prompt
from rlhf.modeling.generation import SamplingConfig, decode_responses, sample_responses

log = logging.getLogger("rlhf.labelling")

Messages = list[Message]


def read_prompts(uri: str, max_prompts: int = 0) -> list[Messages]:
    """The prompts of ``uri``: a prepared ``prompts`` (or ``eval_prompts``) artifact, every
    split, or any prompts file ``rlhf prepare`` reads (``{prompt}`` rows: a string or a
    message list ending with a user turn). Bad rows raise :class:`DataError` naming the file,
    row and field; no prompt raises :class:`EmptyInput`."""
    prompts: list[Messages] = []
    for location, row in read_rows(uri):
        (normalised,) = normalise_row("prompt", row, file=str(uri), location=location)
        prompts.append(normalised["prompt"])
        if 0 < max_prompts <= len(prompts):
            break
    if not prompts:  # read_rows raises on an empty file; a folder of empty splits lands here
        raise EmptyInput(str(uri), "no prompt to sample answers for")
    return prompts


def quotas(k: int, n_models: int) -> list[int]:
    """How many of a task's K candidates each model draws: K split as evenly as possible, the
    first models taking the remainder."""
    if n_models < 1:
        raise ValueError("no model to sample from: give at least one --model")
    if k < n_models:
        raise ValueError(f"k ({k}) must be >= the number of models ({n_models}): each draws one")
    return [k // n_models + (1 if i < k % n_models else 0) for i in range(n_models)]


def model_names(uris: Sequence[str]) -> list[str]:
    """Each model's ``source`` name: its folder's name, made unique with ``-2``, ``-3``."""
    names: list[str] = []
    for uri in uris:
        base = Path(str(uri).rstrip("/")).name or str(uri)
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}-{n}"
        names.append(name)
    return names


@dataclass
class _Slots:
    """One task's candidates as they are drawn: (text, source) in draw order."""

    drawn: list[tuple[str, str]] = field(default_factory=list)

    def take(self, text: str, source: str) -> bool:
        """Keep ``text`` unless it is empty or another candidate's; whether it was kept."""
        if not text.strip() or any(text == t for t, _ in self.drawn):
            return False
        self.drawn.append((text, source))
        return True


@dataclass
class SampledBatch:
    tasks: list[Task]
    counts: dict[str, float]  # tasks, candidates, redrawn, tasks_short, tasks_dropped


def sample_candidates(
    model_uris: Sequence[str], prompts: Sequence[Messages], config: SampleConfig
) -> SampledBatch:
    """K distinct candidates per prompt (see the module's docstring), task ids ``t000001``...
    in prompt order, candidate ids ``c0``... in draw order, each with its model's name as
    ``source``. Each model is loaded once and seeded with ``config.seed`` before it samples."""
    if not prompts:
        raise EmptyInput("prompts", "no prompt to sample answers for")
    shares = quotas(config.k, len(model_uris))
    names = model_names(model_uris)
    device = models.pick_device(config.device)
    sampling = SamplingConfig(config.max_new_tokens, config.temperature, config.top_p)
    budget = config.max_length - config.max_new_tokens
    slots = [_Slots() for _ in prompts]
    redrawn = 0
    for uri, name, share in zip(model_uris, names, shares, strict=True):
        try:
            tokenizer = models.load_tokenizer(uri, config.trust_remote_code)
            model = models.load_causal_lm(uri, config.dtype, config.trust_remote_code)
        except OSError as e:  # a missing folder reads as a bad hub id to transformers
            raise ValueError(f"{uri}: cannot load the model: {e}") from None
        model.to(device).eval()
        encoded = [encode_prompt(tokenizer, p, config.chat_template)[-budget:] for p in prompts]
        set_seed(config.seed)
        wanted = [share] * len(prompts)  # answers this model still owes each task
        for round_ in range(config.redraws + 1):
            rows = [i for i, n in enumerate(wanted) for _ in range(n)]
            if not rows:
                break
            if round_ > 0:
                redrawn += len(rows)
            for start in range(0, len(rows), config.batch_size):
                batch = rows[start : start + config.batch_size]
                rollout = sample_responses(model, tokenizer, [encoded[i] for i in batch], sampling)
                for i, text in zip(batch, decode_responses(tokenizer, rollout), strict=True):
                    if slots[i].take(text, name):
                        wanted[i] -= 1
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return _tasks(prompts, slots, config.k, redrawn)


def _tasks(prompts: Sequence[Messages], slots: list[_Slots], k: int, redrawn: int) -> SampledBatch:
    tasks, short, dropped = [], 0, 0
    for number, (prompt, s) in enumerate(zip(prompts, slots, strict=True), start=1):
        task_id = f"t{number:06d}"
        if len(s.drawn) < 2:
            dropped += 1
            log.warning(
                "label sample: task %s has %d distinct answer(s) after the redraws; dropped",
                task_id,
                len(s.drawn),
            )
            continue
        short += len(s.drawn) < k
        candidates = tuple(Candidate(f"c{j}", t, src) for j, (t, src) in enumerate(s.drawn))
        tasks.append(Task(task_id, tuple(dict(m) for m in prompt), candidates))
    if not tasks:
        raise ValueError(
            f"every task has fewer than 2 distinct answers after the redraws ({len(prompts)} "
            "tasks); raise temperature, max_new_tokens or redraws",
        )
    counts = {
        "tasks": float(len(tasks)),
        "candidates": float(sum(len(t.candidates) for t in tasks)),
        "redrawn": float(redrawn),
        "tasks_short": float(short),
        "tasks_dropped": float(dropped),
    }
    return SampledBatch(tasks, counts)
