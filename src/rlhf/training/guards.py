"""Warnings for the known failure modes of RL on language models, checked every on-policy
iteration and recorded as ``guard/*`` metrics: a negative KL estimate, entropy collapse and
length drift."""

from __future__ import annotations

import logging
import math
from typing import Any

import torch

from rlhf.config import OnPolicyConfig

NEGATIVE_KL_TOLERANCE = 0.01  # nats per response: the least negative mean KL the guard fires at
NEGATIVE_KL_STANDARD_ERRORS = 3.0  # and the mean must be this many standard errors below 0


def kl_stats(per_response: torch.Tensor) -> dict[str, float]:
    """``kl/mean`` and ``kl/std`` (0 for one response) of each response's KL estimate.

    Args:
        per_response: (B,) from ``sequence_kl``.
    """
    std = per_response.std().item() if per_response.numel() > 1 else 0.0
    return {"kl/mean": per_response.mean().item(), "kl/std": std}


class Guards:
    """Warn about (and record as ``guard/*`` metrics) the known failure modes of RL on
    language models: a negative KL estimate, entropy collapse and length drift. Training goes
    on; the warnings say what to look at."""

    def __init__(self, stage: str, config: OnPolicyConfig, responses_per_iteration: int) -> None:
        self.log = logging.getLogger(f"rlhf.{stage}")
        self.stage = stage
        self.responses = responses_per_iteration
        self.entropy_floor = config.entropy_floor
        self.length_drift = config.length_drift
        self.first_length: float | None = None

    def check(self, stats: dict[str, float], step: int) -> None:
        """Add ``guard/negative_kl``, ``guard/entropy_collapse`` and ``guard/length_drift``
        (1.0 when it fired) to ``stats``, which must hold ``kl/mean``, ``policy/entropy`` and
        ``response/length_mean`` (and ``kl/std``, else the KL is taken as noiseless)."""
        if self.first_length is None:
            self.first_length = stats["response/length_mean"]
        # The k1 estimate is unbiased but noisy: near the start, where the true KL is about 0,
        # half the batches' means are below 0. Only a mean clearly below what that noise
        # allows (its standard error over the iteration's responses) says that sampling and
        # the log-probs disagree.
        error = stats.get("kl/std", 0.0) / math.sqrt(self.responses)
        bound = max(NEGATIVE_KL_TOLERANCE, NEGATIVE_KL_STANDARD_ERRORS * error)
        stats["guard/negative_kl"] = float(stats["kl/mean"] < -bound)
        if stats["guard/negative_kl"]:
            self.log.warning(
                "%s iteration %d: mean KL to the reference is negative (%.3f, more than %.1f "
                "standard errors of %.3f below 0): with the k1 estimator this means sampling "
                "does not match the log-probs (temperature, top-p) or a bug",
                self.stage, step, stats["kl/mean"], NEGATIVE_KL_STANDARD_ERRORS, error,
            )  # fmt: skip
        stats["guard/entropy_collapse"] = float(stats["policy/entropy"] < self.entropy_floor)
        if stats["guard/entropy_collapse"]:
            self.log.warning(
                "%s iteration %d: policy entropy %.4f is below %.4f: the policy is collapsing",
                self.stage, step, stats["policy/entropy"], self.entropy_floor,
            )  # fmt: skip
        ratio = stats["response/length_mean"] / max(self.first_length, 1e-6)
        stats["guard/length_drift"] = float(
            ratio > self.length_drift or ratio < 1 / self.length_drift
        )
        if stats["guard/length_drift"]:
            self.log.warning(
                "%s iteration %d: mean response length %.1f drifted from %.1f at the start",
                self.stage, step, stats["response/length_mean"], self.first_length,
            )  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        return {"first_length": self.first_length}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.first_length = state["first_length"]
