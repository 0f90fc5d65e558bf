"""A stand-in for the part of vLLM's offline API that ``rlhf.modeling.vllm_sampler`` calls,
for the CPU tests: vLLM itself needs a CUDA GPU and a 300 MB wheel, neither of which the test
machines have. It checks the calls the way vLLM would where that is what the tests are about:

- ``LLM`` builds its own model from the folder's config.json with random weights (what
  ``load_format="dummy"`` does), so a rollout sampled before any weights were loaded is noise;
- ``load_weights`` takes transformers' names and refuses an unknown one (vLLM's loaders index
  their parameters by name: a KeyError), and records which names it got;
- ``generate`` samples each request with its own seeded generator, stops at a stop token
  (which it keeps) or at ``max_tokens``, and refuses requests without token ids;
- sleep mode: ``sleep`` needs ``enable_sleep_mode``; level 2 discards the weights (they become
  NaN) and the KV cache; ``load_weights`` refuses while the weights sleep (vLLM would write to
  released memory) and ``generate`` while anything sleeps; ``wake_up`` takes tags as vLLM's.

Every ``LLM`` built is kept in ``LLM.built`` for the tests to look at.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, ClassVar

import torch
from transformers import AutoConfig, AutoModelForCausalLM

__version__ = "0.0.0+fake"

_SAMPLING_FIELDS = {
    "n", "temperature", "top_p", "top_k", "max_tokens", "stop_token_ids", "seed", "detokenize",
}  # fmt: skip


class SamplingParams:
    def __init__(self, **fields: Any) -> None:
        unknown = set(fields) - _SAMPLING_FIELDS
        if unknown:
            raise TypeError(f"fake SamplingParams: unexpected fields {sorted(unknown)}")
        self.__dict__.update(fields)


class _Model:
    """What ``LLM.apply_model`` hands its function: the engine's model."""

    def __init__(self, llm: LLM) -> None:
        self.llm = llm

    def load_weights(self, weights: Any) -> set[str]:
        if "weights" in self.llm.asleep:
            raise RuntimeError("fake vLLM: load_weights while the weights sleep (wake_up first)")
        params = dict(self.llm.model.named_parameters())
        loaded = set()
        for name, tensor in weights:
            params[name].data.copy_(tensor)  # KeyError for a name vLLM would not know
            loaded.add(name)
        self.llm.loads.append(loaded)
        return loaded


class LLM:
    built: ClassVar[list[LLM]] = []

    def __init__(self, model: str, **settings: Any) -> None:
        self.settings = settings
        torch.manual_seed(1234)  # the dummy weights: not the policy's
        self.model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model)).eval()
        self.loads: list[set[str]] = []
        self.prefix_cache_resets = 0
        self.requests = 0
        self.asleep: set[str] = set()
        self.sleeps = 0
        LLM.built.append(self)

    def sleep(self, level: int = 1) -> None:
        if not self.settings.get("enable_sleep_mode"):
            raise RuntimeError("fake vLLM: sleep mode is not enabled (enable_sleep_mode)")
        if level != 2:
            raise NotImplementedError("the fake sleeps at level 2 only")
        with torch.no_grad():
            for param in self.model.parameters():
                param.fill_(float("nan"))  # discarded: whatever wakes is garbage
        self.asleep = {"weights", "kv_cache"}
        self.sleeps += 1

    def wake_up(self, tags: list[str] | None = None) -> bool:
        unknown = set(tags or ()) - {"weights", "kv_cache", "scheduling"}
        if unknown:
            raise ValueError(f"fake vLLM: unknown wake_up tags {sorted(unknown)}")
        self.asleep -= set(tags) if tags is not None else self.asleep
        return not self.asleep

    def apply_model(self, fn: Any) -> list[Any]:
        return [fn(_Model(self))]

    def reset_prefix_cache(self) -> bool:
        self.prefix_cache_resets += 1
        return True

    @torch.no_grad()
    def generate(
        self, prompts: list[dict], sampling_params: list[SamplingParams], *, use_tqdm: bool = True
    ) -> list[SimpleNamespace]:
        if self.asleep:
            raise RuntimeError(f"fake vLLM: generate while asleep ({sorted(self.asleep)})")
        if len(prompts) != len(sampling_params):
            raise ValueError("one SamplingParams per prompt")
        outputs = []
        for prompt, params in zip(prompts, sampling_params, strict=True):
            if params.top_p != 1.0:
                raise NotImplementedError("the fake samples the full distribution only")
            self.requests += 1
            ids = list(prompt["prompt_token_ids"])
            generator = torch.Generator().manual_seed(params.seed)
            tokens: list[int] = []
            reason = "length"
            for _ in range(params.max_tokens):
                logits = self.model(torch.tensor([ids + tokens])).logits[0, -1].float()
                if params.temperature == 0:
                    token = int(logits.argmax())
                else:
                    probs = (logits / params.temperature).softmax(-1)
                    token = int(torch.multinomial(probs, 1, generator=generator))
                tokens.append(token)
                if token in params.stop_token_ids:
                    reason = "stop"
                    break
            completion = SimpleNamespace(token_ids=tuple(tokens), finish_reason=reason)
            outputs.append(SimpleNamespace(prompt_token_ids=ids, outputs=[completion]))
        return outputs
