"""SFT tokens/s and MFU, rollout generation tokens/s (the torch decode loop, and vLLM when it
is installed) and PPO episodes/s, of a randomly initialised Llama on one accelerator, through
the project's own engine, rollout sampler and PPO stage.

SFT: ``--steps`` timed optimizer steps (after ``--warmup``) of the SFT loss on random tokens,
``--batch`` sequences of ``--length`` tokens each, through ``build_engine`` (plain PyTorch with
bf16 autocast by default; ``--zero-stage`` for DeepSpeed). MFU = tokens/s x FLOPs per token
(``flops.py``: 6 N + 12 L H T) / the device's peak dense bf16 FLOP/s (``flops.py``'s table from
``torch.cuda.get_device_name``, or ``--peak-tflops``). Generation: ``--gen-batch`` prompts of
``--gen-prompt`` random tokens, ``--gen-new-tokens`` sampled each (temperature 1), through the
on-policy stages' ``RolloutSampler`` with ``rollout_backend`` torch and vllm, and through
``model.generate`` with the same settings (the baseline each is divided by), each after one
untimed rollout; vLLM's time to load the policy's weights before a rollout is reported apart.
PPO: ``ppo_episodes.py``.

On a GPU machine (run on an H200 on 2026-12-04: docs/benchmarks.md#on-a-gpu):

    python benchmarks/gpu_throughput.py --out bench_results/gpu

and in seconds on a CPU, to check that it still runs (``tests/benchmarks``):

    python benchmarks/gpu_throughput.py --device cpu --size micro --batch 2 --length 32 \\
        --ppo-rollout-batch 8 --ppo-minibatch 4 --ppo-new-tokens 8 --peak-tflops 1

Writes ``<out>/gpu_throughput.json`` (with the date, device, versions and command) and prints
a table.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import transformers
from flops import peak_tflops, training_flops_per_token
from llama_shapes import SIZES, build_llama, llama_config, parameter_count
from lm_step import forward_backward, random_tokens
from ppo_episodes import measure as measure_ppo

from rlhf import log_setup
from rlhf.config import DistributedConfig, GRPOConfig
from rlhf.modeling.generation import response_mask
from rlhf.modeling.vllm_sampler import vllm_installed
from rlhf.stages.rollout_sampler import RolloutSampler
from rlhf.training import distributed
from rlhf.training.engine import build_engine, prepare_backend


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_sft(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    config = DistributedConfig(
        zero_stage=args.zero_stage, precision=args.precision,
        gradient_checkpointing=args.gradient_checkpointing,
    )  # fmt: skip
    world = prepare_backend(config, device)
    model_config = llama_config(args.size, args.length)
    model = build_llama(model_config).to(device)
    parameters = parameter_count(model)
    engine = build_engine(model, 1e-5, 0.0, 1.0, config, device)
    engine.train()
    generator = torch.Generator().manual_seed(world.rank)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = []
    for _ in range(args.warmup + args.steps):
        ids = random_tokens(generator, args.batch, args.length, model_config.vocab_size, device)
        synchronize(device)
        started = time.perf_counter()
        forward_backward(engine, ids)
        engine.step()
        synchronize(device)
        seconds.append(time.perf_counter() - started)
    timed = seconds[args.warmup :]
    tokens_per_second = args.batch * args.length * world.size * len(timed) / sum(timed)
    flops_per_token = training_flops_per_token(model_config, parameters, args.length)
    peak = args.peak_tflops or (peak_tflops(device_name(device)) if device.type == "cuda" else None)
    achieved = tokens_per_second * flops_per_token / world.size  # per device
    result = {
        "parameters": parameters,
        "zero_stage": args.zero_stage,
        "precision": args.precision,
        "gradient_checkpointing": args.gradient_checkpointing,
        "ranks": world.size,
        "batch_per_rank": args.batch,
        "length": args.length,
        "step_seconds": seconds,
        "tokens_per_second": tokens_per_second,
        "flops_per_token": flops_per_token,
        "achieved_tflops_per_device": achieved / 1e12,
        "peak_tflops_per_device": peak,
        "mfu": achieved / (peak * 1e12) if peak else None,
        "peak_memory_gib": (
            torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        ),
    }
    del engine, model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def _generate(model: torch.nn.Module, prompts: torch.Tensor, new_tokens: int, eos: int) -> int:
    """``model.generate`` with the sampler's settings (temperature 1, no top-p or top-k, the
    KV cache): the tokens it sampled, up to and including each row's EOS."""
    response = model.generate(
        input_ids=prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=new_tokens,
        do_sample=True, temperature=1.0, top_p=1.0, top_k=0, pad_token_id=0, eos_token_id=eos,
        use_cache=True,
    )[:, prompts.shape[1] :]  # fmt: skip
    mask, _ = response_mask(response, eos)
    return int(mask.sum())


def measure_generation(args: argparse.Namespace, device: torch.device, backend: str) -> dict:
    """Tokens/s of the rollout sampler with ``backend`` (torch, vllm), or of ``model.generate``
    (``generate``, the baseline): one untimed rollout, then ``--gen-rollouts`` timed. The model
    is in ``--precision``'s dtype, but for the engine rows, the decode loop inside a training
    engine's autocast (bf16 or none) on its fp32 weights: ``torch-engine`` samples from them
    (``rollout_weights: policy``), ``torch-copy`` from their copy in the autocast dtype
    (``copy``, what ``auto`` picks under bf16)."""
    model_config = llama_config(args.size, args.gen_prompt + args.gen_new_tokens)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.precision]
    as_stage = backend in ("torch-engine", "torch-copy")
    model = build_llama(model_config).to(device=device, dtype=torch.float32 if as_stage else dtype)
    model.eval()
    engine = SimpleNamespace(model=model, autocast=contextlib.nullcontext)
    if as_stage:
        engine = build_engine(model, 1e-5, 0.0, 1.0, DistributedConfig(precision=args.precision),
                              device)  # fmt: skip
    config = GRPOConfig(
        rollout_backend="torch" if backend == "generate" or as_stage else backend,
        rollout_weights="copy" if backend == "torch-copy" else "policy",
        max_new_tokens=args.gen_new_tokens,
        max_prompt_length=args.gen_prompt, dtype=str(dtype).removeprefix("torch."),
    )  # fmt: skip
    # A random model and no tokenizer: the last id as EOS (vLLM checks it is in the
    # vocabulary); a random model samples it about once in vocab_size tokens, so nearly every
    # response runs to --gen-new-tokens. Tokens/s counts the tokens actually sampled.
    tokenizer = SimpleNamespace(eos_token_id=model_config.vocab_size - 1, pad_token_id=0)
    sampler = None if backend == "generate" else RolloutSampler(engine, tokenizer, config, device)
    vllm = sampler.vllm if sampler is not None else None
    generator = torch.Generator().manual_seed(0)
    ids = random_tokens(generator, args.gen_batch, args.gen_prompt, model_config.vocab_size, device)
    prompts = ids.tolist()
    seconds, sync_seconds, tokens = [], [], 0
    for i in range(1 + args.gen_rollouts):
        if vllm is not None:  # the weight load every rollout pays, timed on its own
            synchronize(device)
            started = time.perf_counter()
            vllm.load_weights(model.named_parameters())
            synchronize(device)
            sync_seconds.append(time.perf_counter() - started)
        synchronize(device)
        started = time.perf_counter()
        if sampler is None:
            with torch.no_grad():
                sampled = _generate(model, ids, args.gen_new_tokens, tokenizer.eos_token_id)
        else:
            with torch.no_grad(), engine.autocast():
                sampled = int(sampler.sample(prompts).response_mask.sum())
        synchronize(device)
        if i:  # the first rollout warms up (CUDA graphs, kernels)
            seconds.append(time.perf_counter() - started)
            tokens += sampled
    result = {
        "backend": backend,
        "batch": args.gen_batch,
        "prompt_tokens": args.gen_prompt,
        "new_tokens": args.gen_new_tokens,
        "rollout_seconds": seconds,
        "tokens_per_second": tokens / sum(seconds),
        "weight_load_seconds": sync_seconds[1:] or None,
    }
    if sampler is not None:
        sampler.close()  # vLLM's engine: its memory back before the next measurement
    del sampler, vllm, model, engine
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def matmul_tflops(device: torch.device, n: int = 8192, repeats: int = 10) -> float | None:
    """The rate of an n x n x n bf16 matrix product on random data (the median time of
    ``repeats``, after 3 warm-ups) on a GPU: the ceiling this device reaches, beside its datasheet peak
    that MFU is reckoned against. None on a CPU."""
    if device.type != "cuda":
        return None
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    seconds = []
    for i in range(3 + repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        end.synchronize()
        if i >= 3:
            seconds.append(start.elapsed_time(end) / 1e3)
    del a, b
    torch.cuda.empty_cache()
    return 2 * n**3 / statistics.median(seconds) / 1e12


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def table(report: dict[str, Any]) -> str:
    sft, ppo = report["sft"], report["ppo"]
    rows = [("date", report["date"]), ("device", report["device"]), ("model", report["size"])]
    if sft is not None:
        mfu = f"{100 * sft['mfu']:.1f}%" if sft["mfu"] is not None else "n/a (no peak known)"
        rows[-1] = ("model", f"{report['size']} ({sft['parameters'] / 1e6:.1f}M parameters)")
        rows += [
            ("SFT", f"{sft['precision']}, zero_stage {sft['zero_stage']}, "
                    f"{sft['batch_per_rank']} x {sft['length']} tokens per rank"),
            ("SFT tokens/s", f"{sft['tokens_per_second']:.0f}"),
            ("SFT TFLOP/s per device", f"{sft['achieved_tflops_per_device']:.1f}"),
            ("SFT MFU", mfu),
        ]  # fmt: skip
    if report["matmul_tflops"] is not None:
        rows.append(("bf16 matmul TFLOP/s (8192^3, measured)", f"{report['matmul_tflops']:.0f}"))
    baseline = next((g for g in report["generation"] if g["backend"] == "generate"), None)
    for gen in report["generation"]:
        ratio = gen["tokens_per_second"] / baseline["tokens_per_second"]
        rows.append(
            (
                f"generation tokens/s ({gen['backend']})",
                f"{gen['tokens_per_second']:.0f} ({gen['batch']} prompts of "
                f"{gen['prompt_tokens']} tokens, {gen['new_tokens']} new; "
                f"{ratio:.2f}x model.generate)",
            )
        )
        if gen["weight_load_seconds"]:
            load = sum(gen["weight_load_seconds"]) / len(gen["weight_load_seconds"])
            rows.append(("vLLM weight load s/rollout", f"{load:.2f}"))
    if ppo is not None:
        rows += [
            ("PPO", f"{ppo['rollout_batch_size']} prompts x {ppo['max_new_tokens']} new tokens, "
                    f"minibatch {ppo['minibatch_size']}, {ppo['ppo_epochs']} epochs"),
            ("PPO s/iteration", f"{ppo['seconds_per_iteration']:.2f}"),
            ("PPO episodes/s", f"{ppo['episodes_per_second']:.2f}"),
            ("PPO s/iteration: sampling, scoring, update",
             f"{ppo['sampling_seconds']:.2f}, {ppo['scoring_seconds']:.2f}, "
             f"{ppo['update_seconds']:.2f}"),
        ]  # fmt: skip
    return "\n".join(["| measure | value |", "| --- | --- |"]
                     + [f"| {k} | {v} |" for k, v in rows]) + "\n"  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("bench_results/gpu"))
    p.add_argument("--device", default="cuda", help="cuda (this rank's GPU) or cpu")
    p.add_argument("--size", default="1b", choices=sorted(SIZES))
    p.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    p.add_argument("--zero-stage", type=int, default=None, choices=[0, 1, 2, 3])
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--batch", type=int, default=8, help="SFT sequences per rank per step")
    p.add_argument("--length", type=int, default=2048, help="SFT tokens per sequence")
    p.add_argument("--warmup", type=int, default=2, help="SFT steps before the timed ones")
    p.add_argument("--steps", type=int, default=10, help="timed SFT steps")
    p.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="peak dense bf16 TFLOP/s per device (default: flops.py's table)",
    )
    p.add_argument("--gen-batch", type=int, default=64, help="prompts per rollout")
    p.add_argument("--gen-prompt", type=int, default=128, help="tokens per prompt")
    p.add_argument("--gen-new-tokens", type=int, default=128, help="tokens sampled per prompt")
    p.add_argument("--gen-rollouts", type=int, default=3, help="timed rollouts per backend")
    p.add_argument("--ppo-rollout-batch", type=int, default=64)
    p.add_argument("--ppo-minibatch", type=int, default=16)
    p.add_argument("--ppo-new-tokens", type=int, default=128)
    p.add_argument("--ppo-warmup", type=int, default=1, help="PPO iterations before the timed")
    p.add_argument("--ppo-iterations", type=int, default=4, help="timed PPO iterations")
    p.add_argument("--skip-sft", action="store_true")
    p.add_argument("--skip-generation", action="store_true")
    p.add_argument("--skip-ppo", action="store_true")
    args = p.parse_args()  # fmt: skip
    if args.ppo_warmup < 1 or args.ppo_iterations < 1 or args.steps < 1:
        p.error("--ppo-warmup, --ppo-iterations and --steps must be >= 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available (use --device cpu for a dry run)")
    for name, value in (("HF_HUB_OFFLINE", "1"), ("TOKENIZERS_PARALLELISM", "false")):
        os.environ.setdefault(name, value)
    log_setup.configure()  # the stages' own quiet: no load reports of the reward model

    world = distributed.launched_world()
    device = distributed.device_for(world, "auto" if args.device == "cuda" else args.device)
    report: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "device": device_name(device),
        "size": args.size,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "matmul_tflops": matmul_tflops(device),
        "sft": None if args.skip_sft else measure_sft(args, device),
        "generation": [],
        "ppo": None,
    }
    if not args.skip_generation:
        backends = ["generate", "torch", "torch-engine", "torch-copy"]
        backends += ["vllm"] if vllm_installed() else []
        if "vllm" not in backends:
            print("vLLM is not installed: generation measured with the torch decode loop only")
        report["generation"] = [measure_generation(args, device, b) for b in backends]
    if not args.skip_ppo:
        with tempfile.TemporaryDirectory(prefix="ppo-bench-") as work:
            os.environ.setdefault("RLHF_CACHE_DIR", str(Path(work) / "cache"))
            report["ppo"] = measure_ppo(
                Path(work), args.size, args.ppo_rollout_batch, args.ppo_minibatch,
                args.ppo_new_tokens, args.ppo_warmup, args.ppo_iterations, args.precision,
                str(device),
            )  # fmt: skip
    if world.is_main:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / "gpu_throughput.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=1) + "\n")
        tmp.rename(path)
        print(table(report))


if __name__ == "__main__":
    main()
