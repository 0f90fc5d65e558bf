"""How much of an RL run's batch-to-batch swing is sampling noise: a *frozen* policy's batch
KL to the reference and batch gold reward, over many rollout batches of one size.

    python scripts/rollout_noise.py --policy P --reference SFT --prompts PROMPTS \\
        --batch-size 64 --batches 16 --gold rlhf.data.demo_task:gold_reward

The policy does not change between batches here, so the spread it prints is what a training
log of that batch size shows even for a run that has fully settled; a training run's spread
over its last iterations, set against it, says how much the policy itself still moves.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch

from rlhf.algorithms.kl import kl_penalty, sequence_kl
from rlhf.config import PPOConfig
from rlhf.gold import load_reward_function
from rlhf.modeling import models
from rlhf.modeling.forward import response_logprobs
from rlhf.modeling.generation import SamplingConfig, decode_responses, sample_responses
from rlhf.stages.on_policy import load_prompts
from rlhf.training.prompt_stream import batch_indices


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", required=True)
    parser.add_argument("--reference", required=True)
    parser.add_argument("--prompts", required=True, help="prepared prompts artifact")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=16)
    parser.add_argument("--gold", help="module:function gold reward")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    config = PPOConfig(seed=args.seed, device="cpu")
    torch.manual_seed(args.seed)
    # Two models, each loaded once (load_policies would load a policy and a reference copy
    # of each folder).
    tokenizer = models.load_tokenizer(args.policy)
    policy = models.load_causal_lm(args.policy, config.dtype).eval()
    policy.config.use_cache = True  # generation reuses the KV cache, as in training
    reference = models.load_causal_lm(args.reference, config.dtype).eval()
    messages, ids = load_prompts(args.prompts, tokenizer, config)
    gold = load_reward_function(args.gold) if args.gold else None
    sampling = SamplingConfig(config.max_new_tokens, config.temperature, config.top_p)
    kls, golds = [], []
    with torch.no_grad():
        for batch in range(args.batches):
            rows = batch_indices(len(ids), args.batch_size, args.seed, batch)
            rollout = sample_responses(policy, tokenizer, [ids[i] for i in rows], sampling)
            inputs = (rollout.input_ids, rollout.attention_mask, rollout.prompt_width)
            logprobs, _ = response_logprobs(policy, *inputs)
            ref_logprobs, _ = response_logprobs(reference, *inputs)
            mask = rollout.response_mask.float()
            kls.append(sequence_kl(kl_penalty(logprobs, ref_logprobs) * mask, mask).mean().item())
            if gold is not None:
                texts = decode_responses(tokenizer, rollout)
                golds.append(
                    statistics.fmean(gold(messages[i], t) for i, t in zip(rows, texts, strict=True))
                )
    for name, values in (("batch KL", kls), ("batch gold", golds)):
        if values:
            print(
                f"{name}: mean {statistics.fmean(values):.3f} sd {statistics.stdev(values):.3f} "
                f"min {min(values):.3f} max {max(values):.3f} over {len(values)} batches of "
                f"{args.batch_size}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
