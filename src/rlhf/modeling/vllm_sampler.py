"""Rollouts sampled by vLLM (the optional ``vllm`` extra) beside the policy on its GPU.

vLLM's engine holds its own copy of the policy's weights, in its own layout (fused attention
and MLP projections, repacked for its kernels on some platforms), and its own KV cache. This
module builds that engine from the policy's architecture alone (``load_format="dummy"``: no
checkpoint is read, so it works for any starting point: a LoRA model, a preset, a resumed run)
and fills its weights from the policy through the workers' ``reload_weights``, which takes
transformers' names, does the fusing and then the platform's repacking again (the model's own
``load_weights`` alone cannot: once repacked, vLLM's CPU layers have lost their loaders). The
stages call :meth:`VllmSampler.load_weights` before every rollout, so vLLM always samples from
the policy as it is now.

The engine runs in this process (``distributed_executor_backend="external_launcher"``): one
engine per rank, each on its rank's GPU, using the process group the stage already started,
as torchrun launches several. Sampling is seeded per request from torch's RNG, which the
stages seed and checkpoint, so a resumed run draws the same seeds.

vLLM's kernels differ from the training model's in the last bits, so the policy's log-probs
of the sampled tokens are recomputed by the policy itself (as with the project's own decode
loop): the PPO ratio compares the policy with itself, never with vLLM.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import shutil
import tempfile
import weakref
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from transformers import PreTrainedModel

from rlhf.modeling.generation import SamplingConfig

log = logging.getLogger("rlhf.rollouts")


def vllm_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


# Warnings vLLM logs for what this module does on purpose, on every engine or every rollout.
_EXPECTED_WARNINGS = {
    "vllm.renderers.base": (
        "Chat template warmup failed",  # no tokenizer (token ids in and out): no chats
        "Using None for EOS token id",  # the stop token is in every request's SamplingParams
    ),
    "vllm.model_executor.model_loader.reload.layerwise": (
        # Its cos/sin table is made from the config, not loaded, and is kept as it is.
        "RotaryEmbedding: Failed to load weights",
    ),
}


class _Expected(logging.Filter):
    def __init__(self, messages: tuple[str, ...]) -> None:
        super().__init__()
        self.messages = messages

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.messages)


def _quiet_expected_warnings() -> None:
    # Filters, not levels: vLLM resets its loggers' levels when it configures logging.
    for name, messages in _EXPECTED_WARNINGS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Expected) for f in logger.filters):
            logger.addFilter(_Expected(messages))


@contextlib.contextmanager
def _default_process_group_kept() -> Iterator[None]:
    """``torch.distributed.destroy_process_group()`` ends only the groups it is given, not the
    default one, in this block."""
    destroy = dist.destroy_process_group

    def destroy_given(group: Any = None) -> None:
        if group is not None:
            destroy(group)

    dist.destroy_process_group = destroy_given
    try:
        yield
    finally:
        dist.destroy_process_group = destroy


class VllmSampler:
    """A vLLM engine of the policy's architecture, sampling token ids from token ids."""

    def __init__(
        self,
        model: PreTrainedModel,
        eos_id: int,
        *,
        dtype: str,
        max_model_len: int,
        gpu_memory: float,
        seed: int,
        sleep: bool,
    ) -> None:
        import vllm
        from vllm.platforms import current_platform

        self.eos_id = eos_id
        # vLLM sleeps on GPUs only (CUDA, ROCm, XPU); elsewhere the engine keeps its memory.
        self.sleep = sleep and current_platform.is_sleep_mode_available()
        if sleep and not self.sleep:
            log.info("vLLM has no sleep mode here: its engine keeps its memory between rollouts")
        # The engine reads the architecture from a folder: config.json alone (no weights, no
        # tokenizer: prompts arrive as token ids and responses leave as token ids). vLLM picks
        # its model class from `architectures`, which only a saved model's config names (a
        # preset's has none, and vLLM would then build the bare LlamaModel, without its head).
        config = copy.deepcopy(model.config)
        config.architectures = [type(model).__name__]
        # The engine's output head is its own copy of a tied input embedding: vLLM reloads a
        # layer only from weights it is handed, and a tied head gets none, so on platforms
        # that repack weights for their kernels (its CPU build) it would go on computing
        # logits from the weights the engine was built with.
        self.tied_head: tuple[str, str] | None = None
        if getattr(config, "tie_word_embeddings", False):
            names = {module: name for name, module in model.named_modules()}
            embed = names[model.get_input_embeddings()] + ".weight"
            self.tied_head = (embed, names[model.get_output_embeddings()] + ".weight")
            config.tie_word_embeddings = False
        folder = Path(tempfile.mkdtemp(prefix="rlhf-vllm-"))
        weakref.finalize(self, shutil.rmtree, folder, True)
        config.save_pretrained(folder)
        _quiet_expected_warnings()
        self.llm: Any = vllm.LLM(
            model=str(folder),
            load_format="dummy",  # the weights come from load_weights, before every rollout
            skip_tokenizer_init=True,
            generation_config="vllm",  # vLLM's neutral defaults; every setting is passed anyway
            dtype=dtype,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory,
            seed=seed,
            distributed_executor_backend="external_launcher",
            enable_sleep_mode=self.sleep,
        )
        if self.sleep:  # asleep until the first rollout: its weights are placeholders anyway
            self.llm.sleep(level=2)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Replace the engine's weights by ``weights`` ((name, tensor), transformers' names;
        every weight of the model, each once) and forget the KV cache the old ones made. A
        sleeping engine is woken: its weights' memory first (loading into memory that sleep
        released would write to unmapped pages), its KV cache once they are in."""

        if self.sleep:
            torch.cuda.empty_cache()  # what the training step cached, for the engine to take
            self.llm.wake_up(tags=["weights"])
        # In this process (external_launcher): the iterator is handed over, not serialised.
        self.llm.collective_rpc(
            "reload_weights", kwargs={"weights_iterator": self._with_head(weights)}
        )
        if self.sleep:
            self.llm.wake_up(tags=["kv_cache"])
        self.llm.reset_prefix_cache()

    def close(self) -> None:
        """Shut the engine down, freeing its weights and KV cache. Without this its memory
        would go whenever the garbage collector reached it, and vLLM's shutdown then tears
        down the process groups of whatever runs at that moment. That shutdown also ends the
        default process group, which the engine shares with the stage; the stage still needs
        it (publishing gathers ZeRO-3 shards, ranks meet at a barrier), so it is kept."""
        if self.llm is None:
            return
        llm, self.llm = self.llm, None
        with _default_process_group_kept():
            llm.llm_engine.engine_core.shutdown()

    def _with_head(
        self, weights: Iterable[tuple[str, torch.Tensor]]
    ) -> Iterator[tuple[str, torch.Tensor]]:
        """``weights``, and the tied input embedding again as the engine's own head."""
        for name, tensor in weights:
            yield name, tensor
            if self.tied_head is not None and name == self.tied_head[0]:
                yield self.tied_head[1], tensor

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
