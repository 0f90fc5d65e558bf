"""One rank of one ``zero_memory.py`` configuration (torchrun starts it, once per rank).

Builds the model, wraps it in the project's engine (``prepare_backend`` + ``build_engine``, as
every training stage does), takes ``--warmup + --steps`` optimizer steps of the causal-LM loss
on random tokens, counts what the rank holds after the last backward pass (the gradients are
then alive and the optimizer state exists), and writes ``<out>/<config>.rank<N>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import resource
import time
from pathlib import Path

import psutil
import torch
from held_bytes import held_bytes
from llama_shapes import build_llama, llama_config, parameter_count
from lm_step import forward_backward, random_tokens

from rlhf.config import DistributedConfig, LoraConfig
from rlhf.modeling.lora import apply_lora
from rlhf.training import distributed
from rlhf.training.engine import build_engine, prepare_backend

# What each configuration name sets: the ZeRO stage (None: plain PyTorch/DDP) and LoRA's rank.
CONFIGS: dict[str, tuple[int | None, int]] = {
    "pytorch": (None, 0),
    "zero0": (0, 0),
    "zero1": (1, 0),
    "zero2": (2, 0),
    "zero3": (3, 0),
    "lora": (None, 16),
}
LR = 1e-4


def resident_after_trim() -> int:
    """The process's RSS once glibc has handed its free heap back to the system: freed
    tensors (the whole model ZeRO-3 partitions after it is built, gathered weights) otherwise
    stay in the RSS."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return psutil.Process().memory_info().rss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", choices=sorted(CONFIGS), required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--size", default="100m")
    p.add_argument("--batch", type=int, default=2, help="sequences per rank per step")
    p.add_argument("--length", type=int, default=128, help="tokens per sequence")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--precision", default="fp32")
    args = p.parse_args()

    stage, lora_r = CONFIGS[args.config]
    config = DistributedConfig(zero_stage=stage, precision=args.precision)
    device = torch.device("cpu")
    world = prepare_backend(config, device)
    rss_start = psutil.Process().memory_info().rss

    model_config = llama_config(args.size, args.length)
    model = build_llama(model_config)
    if lora_r:
        model = apply_lora(model, LoraConfig(r=lora_r, alpha=2.0 * lora_r))
    engine = build_engine(model, LR, 0.01, 1.0, config, device)
    engine.train()

    # Each rank its own tokens: data parallelism over a global batch of batch x ranks.
    generator = torch.Generator().manual_seed(1000 + world.rank)
    seconds, losses, held, rss_held = [], [], None, 0
    for step in range(args.warmup + args.steps):
        ids = random_tokens(generator, args.batch, args.length, model_config.vocab_size, device)
        distributed.barrier()
        started = time.perf_counter()
        losses.append(forward_backward(engine, ids))
        backward_done = time.perf_counter()
        if step == args.warmup + args.steps - 1:
            held = held_bytes(engine.model, engine.optimizer)
            rss_held = resident_after_trim()
        resumed = time.perf_counter()
        engine.step()
        distributed.barrier()
        seconds.append((backward_done - started) + (time.perf_counter() - resumed))

    measured = seconds[args.warmup :]
    tokens_per_step = args.batch * args.length * world.size
    assert held is not None
    result = {
        "config": args.config,
        "zero_stage": stage,
        "lora_r": lora_r,
        "precision": args.precision,
        "rank": world.rank,
        "world_size": world.size,
        "size": args.size,
        "parameters": parameter_count(engine.model),
        "trainable_parameters": parameter_count(engine.model, trainable_only=True),
        "bytes": held.to_dict(),
        "rss_bytes": {
            "after_start": rss_start,
            "after_last_backward": rss_held,
            # Linux reports ru_maxrss in KiB.
            "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        },
        "tokens_per_step": tokens_per_step,
        "step_seconds": seconds,
        "tokens_per_second": tokens_per_step * len(measured) / sum(measured),
        "losses": losses,
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.config}.rank{world.rank}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.rename(path)


if __name__ == "__main__":
    main()
