"""Rollouts sampled by vLLM (the optional ``vllm`` extra) beside the policy on its GPU.

vLLM's engine holds its own copy of the policy's weights, in its own layout (fused attention
and MLP projections), and its own KV cache. This module builds that engine from the policy's
architecture alone (``load_format="dummy"``: no checkpoint is read, so it works for any
starting point: a LoRA model, a preset, a resumed run) and fills its weights from the policy
through the model's ``load_weights``, which takes transformers' names and does the fusing.
The stages call :meth:`VllmSampler.load_weights` before every rollout, so vLLM always samples
from the policy as it is now.

The engine runs in this process (``distributed_executor_backend="external_launcher"``): one
engine per rank, each on its rank's GPU, using the process group the stage already started,
as torchrun launches several. Sampling is seeded per request from torch's RNG, which the
stages seed and checkpoint, so a resumed run draws the same seeds.

vLLM's kernels differ from the training model's in the last bits, so the policy's log-probs
of the sampled tokens are recomputed by the policy itself (as with the project's own decode
loop): the PPO ratio compares the policy with itself, never with vLLM.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from transformers import PretrainedConfig

from rlhf.modeling.generation import SamplingConfig


def vllm_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


class VllmSampler:
    """A vLLM engine of the policy's architecture, sampling token ids from token ids."""

    def __init__(
        self,
        model_config: PretrainedConfig,
        eos_id: int,
        *,
        dtype: str,
        max_model_len: int,
        gpu_memory: float,
        seed: int,
        sleep: bool,
    ) -> None:
        import vllm

        self.eos_id = eos_id
        self.sleep = sleep
        # The engine reads the architecture from a folder: config.json alone (no weights, no
        # tokenizer: prompts arrive as token ids and responses leave as token ids).
        folder = Path(tempfile.mkdtemp(prefix="rlhf-vllm-"))
        weakref.finalize(self, shutil.rmtree, folder, True)
        model_config.save_pretrained(folder)
        self.llm = vllm.LLM(
            model=str(folder),
            load_format="dummy",  # the weights come from load_weights, before every rollout
            skip_tokenizer_init=True,
            generation_config="vllm",  # vLLM's neutral defaults; every setting is passed anyway
            dtype=dtype,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory,
            seed=seed,
            distributed_executor_backend="external_launcher",
            enable_sleep_mode=sleep,
        )
        if sleep:  # asleep until the first rollout: its weights are placeholders anyway
            self.llm.sleep(level=2)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Replace the engine's weights by ``weights`` ((name, tensor), transformers' names;
        every weight of the model, each once) and forget the KV cache the old ones made. A
        sleeping engine is woken: its weights' memory first (loading into memory that sleep
        released would write to unmapped pages), its KV cache once they are in."""

        def load(model: Any) -> None:
            model.load_weights(weights)

        if self.sleep:
            torch.cuda.empty_cache()  # what the training step cached, for the engine to take
            self.llm.wake_up(tags=["weights"])
        self.llm.apply_model(load)
        if self.sleep:
            self.llm.wake_up(tags=["kv_cache"])
        self.llm.reset_prefix_cache()

    def sample(
        self, prompts: list[list[int]], config: SamplingConfig, seed: int, greedy: bool = False
    ) -> list[list[int]]:
        """One response (token ids, ending with EOS unless cut at ``max_new_tokens``) per
        prompt; request i samples with seed ``seed + i``. Call :meth:`load_weights` first;
        with ``sleep`` the engine goes back to sleep once the responses are out (level 2: the
        next :meth:`load_weights` brings new weights, so none are kept)."""
        import vllm

        params = [
            vllm.SamplingParams(
                n=1,
                temperature=0.0 if greedy else config.temperature,
                top_p=1.0 if greedy else config.top_p,
                top_k=0,  # no top-k: sample from the full distribution, as the torch path
                max_tokens=config.max_new_tokens,
                stop_token_ids=[self.eos_id],
                seed=seed + i,
                detokenize=False,
            )
            for i in range(len(prompts))
        ]
        requests = [{"prompt_token_ids": p} for p in prompts]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        if self.sleep:
            self.llm.sleep(level=2)
        return [list(out.outputs[0].token_ids) for out in outputs]
