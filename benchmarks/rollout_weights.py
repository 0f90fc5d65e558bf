"""Rollouts sampled from the policy itself against its sampling copy (``rollout_weights``), side
by side on the same model, prompts and random stream, as the on-policy stages sample them:
through ``RolloutSampler`` inside the policy engine's autocast.

Two cases: ``bf16``, the policy's fp32 weights under bf16 autocast (what ``auto`` copies), and
``lora``, a LoRA policy in fp32 (``rollout_weights: copy`` merges its adapters). Each round
times one rollout of each way in turn, after one untimed rollout each; the ratio per round is
the policy's seconds over the copy's (above 1: the copy is faster), the copy's time including
the copy of the weights into it.

    python benchmarks/rollout_weights.py --size bench --batch 16 --prompt 32 --new-tokens 64

Prints one line per case (median ratio and its range over the rounds) and, with ``--out``,
writes the rounds as JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from llama_shapes import SIZES, build_llama, llama_config
from lm_step import random_tokens

from rlhf import log_setup
from rlhf.config import DistributedConfig, GRPOConfig, LoraConfig
from rlhf.modeling import lora
from rlhf.stages.rollout_sampler import RolloutSampler
from rlhf.training.engine import build_engine

CPU = torch.device("cpu")


def _samplers(case: str, args: argparse.Namespace) -> tuple[dict[str, RolloutSampler], object]:
    """The two samplers of ``case`` on one policy, and its engine."""
    model_config = llama_config(args.size, args.prompt + args.new_tokens)
    torch.manual_seed(0)
    model = build_llama(model_config)
    lora_config = LoraConfig(r=args.lora_r) if case == "lora" else LoraConfig()
    if case == "lora":
        model = lora.apply_lora(model, lora_config)
        with torch.no_grad():  # trained adapters: B is zero at the start
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.02)
    precision = "bf16" if case == "bf16" else "fp32"
    distributed = DistributedConfig(precision=precision)
    engine = build_engine(model, 1e-5, 0.0, 1.0, distributed, CPU)
    # A random model and no tokenizer: the last id as EOS, which a random model samples about
    # once in vocab_size tokens, so nearly every response runs to --new-tokens.
    tokenizer = SimpleNamespace(eos_token_id=model_config.vocab_size - 1, pad_token_id=0)
    samplers = {}
    for weights in ("policy", "copy"):
        config = GRPOConfig(
            rollout_backend="torch", rollout_weights=weights, max_new_tokens=args.new_tokens,
            max_prompt_length=args.prompt, distributed=distributed, lora=lora_config,
        )  # fmt: skip
        samplers[weights] = RolloutSampler(engine, tokenizer, config, CPU)
    return samplers, engine


def measure(case: str, args: argparse.Namespace) -> dict:
    samplers, engine = _samplers(case, args)
    vocab = llama_config(args.size, 1).vocab_size
    prompts = random_tokens(torch.Generator().manual_seed(1), args.batch, args.prompt, vocab, CPU)
    seconds: dict[str, list[float]] = {"policy": [], "copy": []}
    for i in range(1 + args.rounds):
        for weights, sampler in samplers.items():
            torch.manual_seed(i)  # both ways sample from the same stream
            started = time.perf_counter()
            with torch.no_grad(), engine.autocast():
                sampler.sample(prompts.tolist())
            if i:  # the first round warms up
                seconds[weights].append(time.perf_counter() - started)
    ratios = [p / c for p, c in zip(seconds["policy"], seconds["copy"], strict=True)]
    return {"case": case, "seconds": seconds, "policy_over_copy": ratios}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", default="bench", choices=sorted(SIZES))
    p.add_argument("--batch", type=int, default=16, help="prompts per rollout")
    p.add_argument("--prompt", type=int, default=32, help="tokens per prompt")
    p.add_argument("--new-tokens", type=int, default=64, help="tokens sampled per prompt")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--cases", default="bf16,lora")
    p.add_argument("--out", type=Path, default=None, help="write the rounds here (JSON)")
    args = p.parse_args()
    log_setup.configure()
    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="minutes"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cases": [measure(case, args) for case in args.cases.split(",")],
    }
    for case in report["cases"]:
        ratios = case["policy_over_copy"]
        print(
            f"{case['case']:5s} policy {statistics.median(case['seconds']['policy']):.3f} s, "
            f"copy {statistics.median(case['seconds']['copy']):.3f} s per rollout: "
            f"copy {statistics.median(ratios):.2f}x as fast "
            f"(rounds {min(ratios):.2f}-{max(ratios):.2f})"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
