"""RLOO and REINFORCE++ advantages against numbers worked out by hand (in the comments)."""

import pytest
import torch

from rlhf.algorithms.grpo import grpo_policy_loss
from rlhf.algorithms.ppo_loss import ppo_clip_policy_loss
from rlhf.algorithms.reinforce_pp import reinforce_pp_advantages, reverse_cumsum
from rlhf.algorithms.rloo import rloo_advantages


def test_rloo_leave_one_out_baseline_by_hand():
    # Group 1 rewards [1, 2, 6]: baselines are the means of the other two, [4, 3.5, 1.5]:
    # advantages [-3, -1.5, 4.5] (= 3/2 * (r - 3)). Group 2 all equal: no signal.
    adv = rloo_advantages(torch.tensor([1.0, 2.0, 6.0, 0.0, 0.0, 0.0]), group_size=3)
    assert adv.tolist() == pytest.approx([-3.0, -1.5, 4.5, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="groups of 4"):
        rloo_advantages(torch.zeros(6), 4)
    with pytest.raises(ValueError, match=">= 2"):
        rloo_advantages(torch.zeros(6), 1)


def test_reverse_cumsum_stops_at_padding():
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 99.0]])
    assert reverse_cumsum(values, mask).tolist() == [[6.0, 5.0, 3.0], [9.0, 5.0, 0.0]]


def test_reinforce_pp_advantages_by_hand():
    # kl_coef 0.1. Rewards: -0.1 * kl on each token, plus the score on the last real one:
    # row 1 (score 1, kl [0.5, 0, 1]): [-0.05, 0, -0.1 + 1 = 0.9]; returns [0.85, 0.9, 0.9]
    # row 2 (score -1, kl [1, 1, pad]): [-0.1, -0.1 - 1 = -1.1]; returns [-1.2, -1.1]
    # Over the 5 tokens: mean 0.35 / 5 = 0.07; deviations [0.78, 0.83, 0.83, -1.27, -1.17];
    # squares sum 0.6084 + 0.6889 * 2 + 1.6129 + 1.3689 = 4.968, variance 0.9936,
    # std 0.9967949: advantages = deviation / std.
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    kl = torch.tensor([[0.5, 0.0, 1.0], [1.0, 1.0, 9.0]])
    adv = reinforce_pp_advantages(torch.tensor([1.0, -1.0]), kl, mask, kl_coef=0.1)
    assert adv.flatten().tolist() == pytest.approx(
        [0.7825081, 0.8326688, 0.8326688, -1.2740834, -1.1737620, 0.0], abs=1e-5
    )
    # Normalised over the whole batch, not per row: the better row is positive throughout.
    assert (adv[0] > 0).all() and (adv[1, :2] < 0).all()


def test_grpo_loss_takes_token_advantages():
    # With (B, T) advantages and kl_coef 0 the loss is PPO-Clip on exactly those advantages.
    torch.manual_seed(0)
    logprobs, old = torch.randn(2, 3), torch.randn(2, 3)
    adv, mask = torch.randn(2, 3), torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    loss, _ = grpo_policy_loss(logprobs, old, old, adv, mask, 0.2, kl_coef=0.0)
    expected, _ = ppo_clip_policy_loss(logprobs, old, adv, mask, 0.2)
    assert loss.item() == pytest.approx(expected.item())
