"""Model FLOPs of training a decoder, and each accelerator's peak, for MFU.

FLOPs per trained token (PaLM, Chowdhery et al. 2022, appendix B):
``6 * N + 12 * L * H * T``: ``N`` the parameters that take part in a matrix multiply (every
parameter except an untied input embedding, a lookup; a tied embedding counts once, as the
output head), ``L`` layers, ``H`` the attention width (heads x head dim), ``T`` the sequence
length. 6 = 2 (multiply + add) x 3 (forward, and a backward pass twice its cost); the second
term is the attention scores and their weighted sum, counted over the full T x T square (not
halved for the causal mask), as PaLM and Megatron-LM count it. Recomputation under gradient
checkpointing is not counted: MFU is model FLOPs over peak FLOPs.
"""

from __future__ import annotations

from transformers import PretrainedConfig

# Dense (no sparsity) bf16 tensor-core peak per device, from the vendors' datasheets, in
# TFLOP/s. First match wins, so more specific names come first (A100 before A10, L40S before
# L4, the H100 PCIe/NVL variants before the SXM part).
PEAK_BF16_TFLOPS: list[tuple[str, float]] = [
    ("GH200", 989.0),
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM ("NVIDIA H100 80GB HBM3")
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("A10", 125.0),
]


def peak_tflops(device_name: str) -> float | None:
    """The table's peak for ``device_name`` (``torch.cuda.get_device_name``), or None."""
    for key, tflops in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops
    return None


def matmul_parameters(config: PretrainedConfig, parameters: int) -> int:
    """``N``: ``parameters`` less an untied input embedding."""
    if config.tie_word_embeddings:
        return parameters
    return parameters - config.vocab_size * config.hidden_size


def training_flops_per_token(config: PretrainedConfig, parameters: int, length: int) -> float:
    """6 N + 12 L H T (the module docstring)."""
    width = config.num_attention_heads * (config.hidden_size // config.num_attention_heads)
    return 6.0 * matmul_parameters(config, parameters) + 12.0 * (
        config.num_hidden_layers * width * length
    )
