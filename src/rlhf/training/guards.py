"""Warnings for the known failure modes of RL on language models, checked every on-policy
iteration and recorded as ``guard/*`` metrics: a negative KL estimate, entropy collapse and
length drift."""

from __future__ import annotations

import logging
from typing import Any

from rlhf.config import OnPolicyConfig

NEGATIVE_KL_TOLERANCE = 0.01  # nats per response: below -this the negative-KL guard fires


class Guards:
    """Warn about (and record as ``guard/*`` metrics) the known failure modes of RL on
    language models: a negative KL estimate, entropy collapse and length drift. Training goes
    on; the warnings say what to look at."""

    def __init__(self, stage: str, config: OnPolicyConfig) -> None:
        self.log = logging.getLogger(f"rlhf.{stage}")
        self.stage = stage
        self.entropy_floor = config.entropy_floor
        self.length_drift = config.length_drift
        self.first_length: float | None = None

    def check(self, stats: dict[str, float], step: int) -> None:
        """Add ``guard/negative_kl``, ``guard/entropy_collapse`` and ``guard/length_drift``
        (1.0 when it fired) to ``stats``, which must hold ``kl/mean``, ``policy/entropy`` and
        ``response/length_mean``."""
        if self.first_length is None:
            self.first_length = stats["response/length_mean"]
        # A small negative k1 mean is sampling noise; a clearly negative one is not.
        stats["guard/negative_kl"] = float(stats["kl/mean"] < -NEGATIVE_KL_TOLERANCE)
        if stats["guard/negative_kl"]:
            self.log.warning(
                "%s iteration %d: mean KL to the reference is negative (%.3f): with the k1 "
                "estimator this means sampling does not match the log-probs (temperature, "
                "top-p) or a bug", self.stage, step, stats["kl/mean"],
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
