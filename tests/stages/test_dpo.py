"""DPO stage: the implicit reward accuracy and margin rise, the reference log-probs are cached
and never reused for other data, a killed run resumes exactly."""

import json

import pytest
import torch
from killed_run import assert_resumes_with_cached_reference
from safetensors import safe_open

from rlhf import storage
from rlhf.config import DPOConfig, to_dict
from rlhf.modeling import preference_logprobs
from rlhf.stages import dpo
from rlhf.tracking import Tracker

FAST = dict(batch_size=16, eval_batch_size=64, lr=5e-4, eval_every=0, log_every=5)


def test_dpo_raises_implicit_reward_accuracy_and_margin(prepared, micro_models, tmp_path):
    tracker = Tracker()
    cfg = DPOConfig(epochs=2, gold_reward="rlhf.data.demo_task:gold_reward", **FAST)
    out = tmp_path / "policy"
    inputs = dpo.DPOInputs(prepared["preferences"], micro_models["sft"])
    metrics = dpo.run(cfg, inputs, dpo.ModelOutputs(str(out)), tracker)
    # Before the first step the policy is the reference: every implicit reward is 0.
    start = {k: v[0] for k, v in ((k, tracker.history(k)) for k in ("val/rewards/margin",))}
    assert start["val/rewards/margin"] == pytest.approx(0.0, abs=1e-5)
    assert metrics["accuracy_start"] == 0.0  # no pair is strictly ahead yet
    assert metrics["rewards_accuracy"] > 0.6
    assert metrics["rewards_margin"] > 0.05
    assert metrics["loss"] < 0.69  # below log 2, the loss at margin 0
    assert "rewards_gold_accuracy" in metrics
    for key in ("train/loss", "train/rewards/accuracy", "train/rewards/margin",
                "train/rewards/chosen", "train/rewards/rejected"):  # fmt: skip
        assert tracker.history(key), key
    manifest = storage.read_manifest(out)
    assert manifest["artifact"] == "dpo_policy"
    cache = preference_logprobs.read_reference_cache(
        out / preference_logprobs.REFERENCE_CACHE, manifest["reference_logprobs_key"]
    )  # None unless the published file holds the manifest's key
    assert cache is not None
    assert len(cache["train_chosen"]) == metrics["train_pairs"]
    assert bool((cache["val_rejected"] < 0).all())  # log-probs of whole answers


def test_reference_cache_is_reused_only_for_the_same_data_and_model(
    prepared, micro_models, tmp_path
):
    cfg = DPOConfig(
        epochs=1, max_steps=2, checkpoint_dir=str(tmp_path / "ckpt"), label_smoothing=0.1, **FAST
    )  # cDPO
    inputs = dpo.DPOInputs(prepared["preferences"], micro_models["sft"])
    dpo.run(cfg, inputs, dpo.ModelOutputs(str(tmp_path / "a")))
    cache = tmp_path / "ckpt" / preference_logprobs.REFERENCE_CACHE
    with safe_open(cache, framework="pt") as f:
        key = f.metadata()["key"]
    computed = preference_logprobs.read_reference_cache(cache, key)
    assert computed is not None
    assert key == preference_logprobs.reference_key(
        prepared["preferences"], micro_models["sft"], cfg
    )
    # Another encoding (max_length) or another reference model means another key.
    assert key != preference_logprobs.reference_key(
        prepared["preferences"], micro_models["sft"], DPOConfig(max_length=64)
    )
    assert key != preference_logprobs.reference_key(
        prepared["preferences"], micro_models["reward"], cfg
    )
    # A cache with a wrong key is never used: poison its numbers and change its key.
    poisoned = {k: torch.zeros_like(v) for k, v in computed.items()}
    cache.write_bytes(preference_logprobs.cache_bytes("stale", poisoned))
    assert preference_logprobs.read_reference_cache(cache, key) is None
    # The same poisoned numbers under the right key are used as they are (that is the cache).
    cache.write_bytes(preference_logprobs.cache_bytes(key, poisoned))
    cached = preference_logprobs.read_reference_cache(cache, key)
    assert cached is not None and float(cached["train_chosen"].abs().sum()) == 0.0
    # The tensors read before are the stage's own (not the file's pages): rewriting the file
    # in place did not change them.
    assert float(computed["train_chosen"].abs().sum()) > 0


def test_bad_dpo_settings_are_clear_errors(prepared, micro_models, tmp_path):
    inputs = dpo.DPOInputs(prepared["preferences"], micro_models["sft"])
    with pytest.raises(ValueError, match="loss_type"):
        dpo.run(DPOConfig(loss_type="hinge"), inputs, dpo.ModelOutputs(str(tmp_path / "x")))
    with pytest.raises(ValueError, match="sigmoid' only"):
        dpo.run(
            DPOConfig(loss_type="ipo", label_smoothing=0.1),
            inputs,
            dpo.ModelOutputs(str(tmp_path)),
        )


RUN_DPO = """
import json, sys
from rlhf.config import DPOConfig, from_dict
from rlhf.stages import dpo
cfg = from_dict(DPOConfig, json.loads(sys.argv[1]))
dpo.run(cfg, dpo.DPOInputs(sys.argv[2], sys.argv[3]), dpo.ModelOutputs(sys.argv[4]))
"""


def test_dpo_resumes_after_kill_and_matches_an_unbroken_run(
    prepared, micro_models, tmp_path, monkeypatch
):
    """Killed after its 4th step (IPO), rerun: the same weights as a run never killed, and
    the cached reference log-probs are reused, not recomputed."""
    cfg = DPOConfig(epochs=1, max_steps=8, checkpoint_every=2, loss_type="ipo", beta=0.5, **FAST)
    inputs = dpo.DPOInputs(prepared["preferences"], micro_models["sft"])
    assert_resumes_with_cached_reference(
        RUN_DPO,
        json.dumps(to_dict(cfg)),
        [inputs.preferences, inputs.sft_model],
        lambda out, tracker: dpo.run(cfg, inputs, dpo.ModelOutputs(out), tracker),
        tmp_path,
        monkeypatch,
    )


@pytest.mark.parametrize("loss_type, beta", [("simpo", 2.0), ("orpo", 0.3)])
def test_reference_free_losses_learn_without_a_reference_model(
    loss_type, beta, prepared, micro_models, tmp_path, monkeypatch
):
    """SimPO and ORPO: the preference accuracy rises, and only the policy is ever loaded (no
    reference model in memory, no reference log-probs computed or cached)."""
    from rlhf.modeling import models

    loaded = []
    load = models.load_causal_lm
    monkeypatch.setattr(models, "load_causal_lm", lambda *a, **k: loaded.append(a) or load(*a, **k))
    cfg = DPOConfig(epochs=2, loss_type=loss_type, beta=beta, **FAST)
    out = tmp_path / "policy"
    inputs = dpo.DPOInputs(prepared["preferences"], micro_models["sft"])
    metrics = dpo.run(cfg, inputs, dpo.ModelOutputs(str(out)))
    assert len(loaded) == 1  # the policy
    assert not (out / preference_logprobs.REFERENCE_CACHE).exists()
    assert storage.read_manifest(out)["reference_logprobs_key"] is None
    assert metrics["rewards_accuracy"] > max(0.6, metrics["accuracy_start"])
    assert metrics["rewards_margin"] > 0
