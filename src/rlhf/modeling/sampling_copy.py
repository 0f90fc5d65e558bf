"""A copy of the policy for the decode loop to sample from: plain transformers weights in the
dtype the policy computes in, LoRA's adapters merged. Sampling from fp32 weights under
bf16/fp16 autocast keeps the activations between the matrix products in fp32 (norms, rotary
embeddings), so autocast casts them again before every linear layer and attention call (30
casts more per forward on the bench model: benchmarks/autocast_casts.py), each a kernel launch
on a GPU, where the decode loop is bound by launches; a LoRA policy runs two more small
matmuls per adapted layer per token. The copy runs neither. It costs the weights once more in
its dtype, and one copy of the policy's weights into it before each rollout."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from rlhf.modeling import lora


class SamplingCopy:
    """``policy``'s weights (adapters merged) in a model of its own, in ``dtype`` on
    ``device``. :meth:`refreshed` copies the policy's current weights in and returns it."""

    def __init__(
        self,
        policy: torch.nn.Module,
        dtype: torch.dtype,
        device: torch.device,
        trust_remote_code: bool = False,
    ) -> None:
        self.policy = policy
        base = lora.unwrap(policy)
        # Built from the config (not a deepcopy of the policy, which would hold its fp32
        # weights and adapters once more on the device first); its random initialisation draws
        # on a forked RNG, so the stage's sampling stream is the one it would be without.
        forked = torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])
        with forked, torch.device(device):
            self.model: PreTrainedModel = AutoModelForCausalLM.from_config(
                base.config, dtype=dtype, trust_remote_code=trust_remote_code
            )
        self.model.eval().requires_grad_(False)
        own = dict(self.model.named_buffers())
        with torch.no_grad():
            for name, buffer in base.named_buffers():  # not trained: copied once
                if name in own:
                    own[name].copy_(buffer)
        self._params = dict(self.model.named_parameters())
        names = {name for name, _ in lora.merged_weights(policy)}
        if names != set(self._params):
            raise ValueError(
                f"the sampling copy of {type(base).__name__} does not have the policy's weights "
                f"(only the policy: {sorted(names - set(self._params))[:5]}; only the copy: "
                f"{sorted(set(self._params) - names)[:5]}): set rollout_weights: policy"
            )

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @torch.no_grad()
    def refreshed(self) -> PreTrainedModel:
        """The copy, holding the policy's weights as they are now (cast to its dtype)."""
        for name, tensor in lora.merged_weights(self.policy):
            self._params[name].copy_(tensor)
        return self.model
