"""What samples the on-policy stages' rollouts (PPO, GRPO and its estimators, online DPO):
the project's decode loop, on the policy itself or on a copy of it in the dtype it computes in
(``rollout_weights``), or a vLLM engine beside it (``rollout_backend``,
docs/scaling.md#rollouts-with-vllm)."""

from __future__ import annotations

import logging
import time

import torch
from transformers import PreTrainedTokenizerBase

from rlhf.config import OnPolicyConfig
from rlhf.modeling import lora
from rlhf.modeling.generation import (
    Rollout,
    SamplingConfig,
    rollout_from_responses,
    sample_responses,
)
from rlhf.modeling.sampling_copy import SamplingCopy
from rlhf.modeling.vllm_sampler import VllmSampler, vllm_installed
from rlhf.training import distributed
from rlhf.training.engine import Engine
from rlhf.training.timing import seconds_since

log = logging.getLogger("rlhf.rollouts")

# vLLM's dtype for a policy trained under mixed precision: its compute dtype.
_PRECISION_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


def rollout_backend(config: OnPolicyConfig, device: torch.device) -> str:
    """``"torch"`` or ``"vllm"``: what ``config.rollout_backend`` means on ``device``."""
    if config.rollout_backend == "auto":
        return "vllm" if device.type == "cuda" and vllm_installed() else "torch"
    if config.rollout_backend == "vllm" and not vllm_installed():
        raise RuntimeError(
            "rollout_backend: vllm, but vLLM is not installed: pip install 'rlhf[vllm]' "
            "(docs/scaling.md#rollouts-with-vllm), or set rollout_backend: torch"
        )
    return config.rollout_backend


class RolloutSampler:
    """Samples one response per prompt from the policy as its weights are now.

    Call :meth:`sample` inside ``engine.gathered()`` (ZeRO-3 gathers the policy's shards
    there). With vLLM, each call first copies the policy's weights into the engine (adapters
    merged, under transformers' names), so no rollout samples from weights an update has
    since changed."""

    def __init__(
        self,
        engine: Engine,
        tokenizer: PreTrainedTokenizerBase,
        config: OnPolicyConfig,
        device: torch.device,
    ) -> None:
        self.engine, self.tokenizer, self.device = engine, tokenizer, device
        self.sampling = SamplingConfig(config.max_new_tokens, config.temperature, config.top_p)
        self.backend = rollout_backend(config, device)
        self.vllm: VllmSampler | None = None
        self.seconds = 0.0  # spent in sample() since take_seconds() last read it
        if self.backend == "vllm":
            # One engine per rank, in the process group the stage's engines use (started
            # here when the run is a single process without DeepSpeed).
            world = distributed.start(config.distributed, device, need_group=True)
            precision = config.distributed.precision
            self.vllm = VllmSampler(
                lora.unwrap(engine.model),
                tokenizer.eos_token_id,
                dtype=_PRECISION_DTYPES.get(precision, config.dtype),
                max_model_len=config.max_prompt_length + config.max_new_tokens,
                gpu_memory=config.vllm_gpu_memory,
                seed=config.seed + world.rank,
                sleep=config.vllm_sleep,
            )
        self.copy = self._sampling_copy(config) if self.backend == "torch" else None
        on = f" on a {self.copy.dtype} copy of the policy" if self.copy else ""
        log.info("rollouts sampled by %s", "vLLM" if self.vllm else f"the torch decode loop{on}")

    def _sampling_copy(self, config: OnPolicyConfig) -> SamplingCopy | None:
        """The policy's copy to sample from, as ``config.rollout_weights`` says, or None."""
        if config.rollout_weights == "policy":
            return None
        autocast = self.engine.autocast_dtype  # plain PyTorch under bf16/fp16
        if config.rollout_weights == "auto" and (autocast is None or config.lora.quantize_4bit):
            return None
        policy = self.engine.model
        return SamplingCopy(policy, autocast or policy.dtype, self.device, config.trust_remote_code)

    def close(self) -> None:
        """Free the vLLM engine (nothing to free with the decode loop)."""
        if self.vllm is not None:
            self.vllm.close()

    def take_seconds(self) -> float:
        """Seconds spent sampling since the last call (the rollout loop's sampling clock)."""
        seconds, self.seconds = self.seconds, 0.0
        return seconds

    def sample(self, prompts: list[list[int]]) -> Rollout:
        started = time.perf_counter()
        rollout = self._sample(prompts)
        self.seconds += seconds_since(started, self.device)
        return rollout

    def _sample(self, prompts: list[list[int]]) -> Rollout:
        if self.vllm is None:
            model = self.copy.refreshed() if self.copy else self.engine.model
            return sample_responses(model, self.tokenizer, prompts, self.sampling)
        self.vllm.load_weights(lora.merged_weights(self.engine.model))
        # Seeds drawn from torch's RNG, which the stages seed and checkpoint: a resumed run
        # samples what the uninterrupted one would have.
        seed = int(torch.randint(0, 2**31 - len(prompts), ()).item())
        responses = self.vllm.sample(prompts, self.sampling, seed)
        pad = self.tokenizer.pad_token_id
        rollout = rollout_from_responses(prompts, responses, self.tokenizer.eos_token_id, pad)
        return rollout.to(self.device)
