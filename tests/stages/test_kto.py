"""KTO stage on the demo's preference pairs split into unpaired feedback: the implicit reward
separates desirable from undesirable answers, the reference log-probs (matched and
mismatched answers) are cached, and the pairing for the KL estimate avoids the row's prompt."""

import pytest

from rlhf import storage
from rlhf.config import KTOConfig
from rlhf.modeling import preference_logprobs
from rlhf.stages import kto
from rlhf.tracking import Tracker

FAST = dict(batch_size=16, eval_batch_size=64, lr=5e-4, eval_every=0, log_every=5)


def test_kto_separates_desirable_from_undesirable_answers(prepared, micro_models, tmp_path):
    tracker = Tracker()
    cfg = KTOConfig(epochs=1, **FAST)
    out = tmp_path / "policy"
    inputs = kto.KTOInputs(prepared["unpaired"], micro_models["sft"])
    metrics = kto.run(cfg, inputs, kto.ModelOutputs(str(out)), tracker)
    # Before the first step the policy is the reference: every reward and z0 are 0, so the
    # accuracy is the share of undesirable answers (r > z0 holds for none): one half.
    assert tracker.history("val/kl")[0] == pytest.approx(0.0, abs=1e-5)
    assert metrics["accuracy_start"] == pytest.approx(0.5, abs=0.01)
    # The implicit reward separates the labels (on this micro model both fall below z0).
    assert metrics["rewards_margin"] > 0.5
    assert metrics["rewards_desirable"] > metrics["rewards_undesirable"]
    assert metrics["desirable_share"] == pytest.approx(0.5)
    for key in ("train/loss", "train/kl", "train/rewards/accuracy", "train/rewards/desirable"):
        assert tracker.history(key), key
    manifest = storage.read_manifest(out)
    assert manifest["artifact"] == "kto_policy"
    cache = preference_logprobs.read_reference_cache(
        out / preference_logprobs.REFERENCE_CACHE, manifest["reference_logprobs_key"]
    )  # None unless the published file holds the manifest's key
    assert cache is not None
    assert len(cache["train_chosen"]) == metrics["train_examples"]


def test_mismatched_pairing_skips_the_same_prompt():
    # Half the split away (4 -> 2 rows on), moved on past rows with the same prompt.
    prompts = ["a", "a", "a", "b"]
    assert [kto.mismatched_index(prompts, i) for i in range(4)] == [3, 3, 3, 1]
    assert kto.mismatched_index(["a", "a"], 0) == 0  # one prompt: nothing else to pair with
    assert kto.mismatched_index(["a"], 0) == 0


def test_bad_kto_settings_are_clear_errors():
    with pytest.raises(ValueError, match="beta must be > 0"):
        KTOConfig(beta=0)
    with pytest.raises(ValueError, match="must not both be 0"):
        KTOConfig(desirable_weight=0, undesirable_weight=0)
