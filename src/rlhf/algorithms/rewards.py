"""Per-token rewards for PPO: the KL penalty on every response token plus the reward
model's score on the last one, and optional running normalisation of those scores."""

from __future__ import annotations

import math

import torch


def token_level_rewards(
    scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float
) -> torch.Tensor:
    """r_t = -kl_coef * kl_t on every real response token, plus the sequence score at the
    last real token (the reward model judges the finished answer: InstructGPT's
    r = r_theta - beta * log(pi_RL / pi_SFT), spread over tokens).

    Args:
        scores: (B,) reward-model score of each response.
        kl: (B, T) per-token KL estimate (``kl.kl_penalty``).
        mask: (B, T), 1 on real response tokens. A row's last real token need not be at
            T-1 (shorter responses are padded); a row with no real token gets no reward.
        kl_coef: the penalty coefficient (lambda / beta of the KL controller).
    Returns:
        (B, T), 0 on padding.
    """
    mask_f = mask.to(kl.dtype)
    rewards = -kl_coef * kl * mask_f
    T = mask.shape[1]
    # Index of the last 1 in each row: the first 1 of the row read backwards.
    has_token = mask_f.sum(dim=1) > 0
    last = (T - 1) - mask_f.flip(dims=[1]).argmax(dim=1)
    # Rows with an all-zero mask add 0 (argmax would otherwise point at T-1).
    bonus = torch.where(has_token, scores.to(kl.dtype), torch.zeros_like(scores, dtype=kl.dtype))
    return rewards.scatter_add(1, last.unsqueeze(1), bonus.unsqueeze(1))


class RunningMoments:
    """Count, mean and (population) variance of every score seen so far, merged batch by
    batch with Chan et al.'s parallel algorithm, so the result equals the moments of all
    batches concatenated. Kept as Python floats (double precision)."""

    def __init__(self) -> None:
        self.count = 0.0
        self.mean = 0.0
        self.var = 1.0  # no data yet: normalisation by it is the identity on the spread

    @property
    def std(self) -> float:
        return math.sqrt(self.var)

    def update(self, values: torch.Tensor) -> None:
        """Merge a batch (any shape; all entries count). An empty batch changes nothing."""
        x = values.detach().double().flatten()
        n = float(x.numel())
        if n == 0:
            return
        b_mean = x.mean().item()
        b_var = x.var(unbiased=False).item()
        if self.count == 0:
            self.count, self.mean, self.var = n, b_mean, b_var
            return
        total = self.count + n
        delta = b_mean - self.mean
        # Chan's merge of the sums of squared deviations M2 = var * count.
        m2 = self.var * self.count + b_var * n + delta**2 * self.count * n / total
        self.mean += delta * n / total
        self.var = m2 / total
        self.count = total

    def state_dict(self) -> dict[str, float]:
        return {"count": self.count, "mean": self.mean, "var": self.var}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.count = float(state["count"])
        self.mean = float(state["mean"])
        self.var = float(state["var"])


def normalize_and_clip_scores(
    scores: torch.Tensor, running: RunningMoments | None, clip: float | None
) -> torch.Tensor:
    """Optionally normalise reward-model scores by running moments, then optionally clip.

    With ``running``, the batch is merged into it first and then scored as
    (s - mean) / (std + 1e-8), so the very first batch is normalised by its own moments.
    With ``clip``, the result is clamped to [-clip, clip]; None (or <= 0) disables it.

    Args:
        scores: (B,).
        running: running moments to update and use, or None for no normalisation.
        clip: bound on |score|, or None.
    Returns:
        (B,).
    """
    if running is not None:
        running.update(scores)
        scores = (scores - running.mean) / (running.std + 1e-8)
    if clip is not None and clip > 0:
        scores = scores.clamp(-clip, clip)
    return scores
