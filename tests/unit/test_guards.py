"""The on-policy stages' guards: the negative-KL guard tells the k1 estimator's noise from a
real mismatch, on values worked out by hand; entropy collapse and length drift."""

import logging

import pytest
import torch

from rlhf.config import GRPOConfig
from rlhf.training.guards import Guards, kl_stats


def stats(kl_mean, kl_std=None, entropy=1.0, length=10.0):
    values = {"kl/mean": kl_mean, "policy/entropy": entropy, "response/length_mean": length}
    if kl_std is not None:
        values["kl/std"] = kl_std
    return values


def test_kl_stats_of_the_responses():
    per_response = torch.tensor([0.1, -0.3, 0.2, 0.0], dtype=torch.float64)
    # mean (0.1 - 0.3 + 0.2 + 0) / 4 = 0; sample variance (0.01 + 0.09 + 0.04 + 0) / 3
    expected = {"kl/mean": 0.0, "kl/std": (0.14 / 3) ** 0.5}
    assert kl_stats(per_response) == pytest.approx(expected, abs=1e-12)
    assert kl_stats(torch.tensor([0.5])) == {"kl/mean": 0.5, "kl/std": 0.0}


def test_a_negative_mean_within_the_noise_is_not_flagged(caplog):
    """PPO on make demo's models (2026-12-04, a 6-iteration run): iteration 4's responses
    had a k1 mean of -0.0227 and a spread of 0.2301 over 64 responses, so a standard error of
    0.2301 / 8 = 0.0288 and a bound of 3 x 0.0288 = 0.0863: noise. The 0.01 floor alone (the
    guard before) fired there, as it did in make demo's console (iteration 4: -0.012)."""
    guards = Guards("ppo", GRPOConfig(), responses_per_iteration=64)
    quiet = stats(-0.0227, kl_std=0.2301)
    with caplog.at_level(logging.WARNING, logger="rlhf.ppo"):
        guards.check(quiet, step=4)
    assert quiet["guard/negative_kl"] == 0.0 and not caplog.records
    beyond = stats(-0.0864, kl_std=0.2301)
    guards.check(beyond, step=5)
    assert beyond["guard/negative_kl"] == 1.0
    noiseless = stats(-0.0227)  # no kl/std: the floor is the bound
    guards.check(noiseless, step=6)
    assert noiseless["guard/negative_kl"] == 1.0


def test_a_mean_beyond_three_standard_errors_is_flagged(caplog):
    # 16 responses with spread 0.2: standard error 0.05, bound 0.15.
    guards = Guards("grpo", GRPOConfig(), responses_per_iteration=16)
    at_bound, beyond = stats(-0.149, kl_std=0.2), stats(-0.151, kl_std=0.2)
    with caplog.at_level(logging.WARNING, logger="rlhf.grpo"):
        guards.check(at_bound, step=1)
        assert not caplog.records
        guards.check(beyond, step=2)
    assert (at_bound["guard/negative_kl"], beyond["guard/negative_kl"]) == (0.0, 1.0)
    (record,) = caplog.records
    assert "grpo iteration 2: mean KL to the reference is negative (-0.151" in record.message
    assert "3.0 standard errors of 0.050 below 0" in record.message
    # Little spread: the 0.01 floor is the bound.
    tight = stats(-0.011, kl_std=0.001)
    guards.check(tight, step=3)
    assert tight["guard/negative_kl"] == 1.0


def test_entropy_collapse_and_length_drift():
    config = GRPOConfig(entropy_floor=0.05, length_drift=2.0)
    guards = Guards("grpo", config, responses_per_iteration=8)
    first = stats(0.1, kl_std=0.0, entropy=0.5, length=10.0)
    guards.check(first, step=1)
    assert first["guard/entropy_collapse"] == first["guard/length_drift"] == 0.0
    collapsed = stats(0.1, kl_std=0.0, entropy=0.01, length=21.0)  # 2.1x the first length
    guards.check(collapsed, step=2)
    assert collapsed["guard/entropy_collapse"] == collapsed["guard/length_drift"] == 1.0
    shorter = stats(0.1, kl_std=0.0, entropy=0.5, length=5.5)  # 0.55x: within 1/2
    guards.check(shorter, step=3)
    assert shorter["guard/length_drift"] == 0.0
