"""DPO, IPO, cDPO and GRPO against numbers worked out by hand (in the comments)."""

import math

import pytest
import torch

from rlhf.algorithms.dpo_loss import dpo_loss
from rlhf.algorithms.grpo import group_advantages, grpo_policy_loss

# Two pairs, beta = 0.5. Pair 1: log-ratios chosen -1 - (-2) = 1, rejected -3 - (-2.5) = -0.5,
# h = 1.5, beta * h = 0.75. Pair 2: chosen -2 - (-2) = 0, rejected -1 - (-2) = 1, h = -1,
# beta * h = -0.5.
POLICY_CHOSEN = torch.tensor([-1.0, -2.0])
POLICY_REJECTED = torch.tensor([-3.0, -1.0])
REF_CHOSEN = torch.tensor([-2.0, -2.0])
REF_REJECTED = torch.tensor([-2.5, -2.0])
# softplus(x) = log(1 + e^x) = -log sigmoid(-x); softplus(x) - softplus(-x) = x.


def _loss(**kw):
    return dpo_loss(POLICY_CHOSEN, POLICY_REJECTED, REF_CHOSEN, REF_REJECTED, beta=0.5, **kw)


def test_dpo_sigmoid_loss_and_implicit_rewards_by_hand():
    out = _loss()
    assert out.losses.tolist() == pytest.approx([0.3868710, 0.9740770], abs=1e-6)
    assert out.loss.item() == pytest.approx((0.3868710 + 0.9740770) / 2, abs=1e-6)  # 0.6804740
    # implicit rewards beta * log-ratio: chosen [0.5, 0], rejected [-0.25, 0.5]
    assert out.chosen_rewards.tolist() == pytest.approx([0.5, 0.0])
    assert out.rejected_rewards.tolist() == pytest.approx([-0.25, 0.5])
    assert out.margins.tolist() == pytest.approx([0.75, -0.5])
    assert out.accuracy.item() == 0.5  # pair 1 ranked right, pair 2 wrong


def test_cdpo_label_smoothing_by_hand():
    # eps = 0.1: 0.9 * softplus(-beta h) + 0.1 * softplus(beta h), softplus(beta h) = that + beta h.
    # Pair 1: 0.9 * 0.3868710 + 0.1 * (0.3868710 + 0.75) = 0.3481839 + 0.1136871 = 0.4618710
    # Pair 2: 0.9 * 0.9740770 + 0.1 * (0.9740770 - 0.5) = 0.8766693 + 0.0474077 = 0.9240770
    out = _loss(label_smoothing=0.1)
    assert out.losses.tolist() == pytest.approx([0.4618710, 0.9240770], abs=1e-6)
    # its gradient vanishes at a finite margin: d/dx [0.9 sp(-x) + 0.1 sp(x)] = 0 at
    # sigmoid(x) = 0.9, x = log 9 (with beta = 1, the policy's h equals x).
    h = torch.tensor([math.log(9.0)], requires_grad=True)
    loss = dpo_loss(h, torch.zeros(1), torch.zeros(1), torch.zeros(1), 1.0, "sigmoid", 0.1).loss
    loss.backward()
    assert h.grad.item() == pytest.approx(0.0, abs=1e-6)


def test_ipo_loss_by_hand():
    # target 1 / (2 beta) = 1: pair 1 (1.5 - 1)^2 = 0.25, pair 2 (-1 - 1)^2 = 4, mean 2.125
    out = _loss(loss_type="ipo")
    assert out.losses.tolist() == pytest.approx([0.25, 4.0])
    assert out.loss.item() == pytest.approx(2.125)


def test_dpo_gradient_flows_to_the_policy_only():
    chosen = POLICY_CHOSEN.clone().requires_grad_(True)
    ref = REF_CHOSEN.clone().requires_grad_(True)
    dpo_loss(chosen, POLICY_REJECTED, ref, REF_REJECTED, 0.5).loss.backward()
    # d/d chosen_i of mean(softplus(-beta h_i)) = -beta * sigmoid(-beta h_i) / 2:
    # pair 1: -0.5 * sigmoid(-0.75) / 2 = -0.25 * 0.3208213 = -0.0802053
    # pair 2: -0.5 * sigmoid(0.5) / 2 = -0.25 * 0.6224593 = -0.1556148
    assert chosen.grad.tolist() == pytest.approx([-0.0802053, -0.1556148], abs=1e-6)
    assert ref.grad is None  # the reference is detached


def test_dpo_rejects_bad_settings():
    with pytest.raises(ValueError, match="beta"):
        _loss_beta(0.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        _loss(label_smoothing=0.5)
    with pytest.raises(ValueError, match="IPO"):
        _loss(loss_type="ipo", label_smoothing=0.1)
    with pytest.raises(ValueError, match="unknown DPO loss"):
        _loss(loss_type="hinge")


def _loss_beta(beta):
    return dpo_loss(POLICY_CHOSEN, POLICY_REJECTED, REF_CHOSEN, REF_REJECTED, beta=beta)


def test_group_advantages_by_hand():
    rewards = torch.tensor([1.0, 2.0, 3.0, 5.0, 5.0, 5.0])
    # group 1 [1, 2, 3]: mean 2, sample std sqrt((1 + 0 + 1) / 2) = 1 -> [-1, 0, 1]
    # group 2 [5, 5, 5]: all equal -> 0 (no signal), not nan
    out = group_advantages(rewards, group_size=3, eps=0.0 + 1e-12)
    assert out.tolist() == pytest.approx([-1.0, 0.0, 1.0, 0.0, 0.0, 0.0], abs=1e-6)
    # the default eps 1e-4 divides by std + 1e-4: -1 / 1.0001 = -0.99990001
    assert group_advantages(rewards, 3)[0].item() == pytest.approx(-0.99990001, abs=1e-7)
    # G = 2, [0, 4]: mean 2, std sqrt((4 + 4) / 1) = 2.8284271 -> -+2 / 2.8284271 = -+0.7071068
    two = group_advantages(torch.tensor([0.0, 4.0]), 2, eps=0.0)
    assert two.tolist() == pytest.approx([-0.7071068, 0.7071068], abs=1e-6)
    # Dr. GRPO: the mean only
    assert group_advantages(torch.tensor([0.0, 4.0]), 2, scale=False).tolist() == [-2.0, 2.0]
    with pytest.raises(ValueError, match="group_size"):
        group_advantages(rewards, 1)
    with pytest.raises(ValueError, match="do not split"):
        group_advantages(rewards, 4)


def test_grpo_policy_loss_by_hand():
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    old = torch.zeros(2, 2)
    ref = torch.zeros(2, 2)
    # ratios: row 0 [1.5, 0.5], row 1 [1.1, (padding)]
    logprobs = torch.log(torch.tensor([[1.5, 0.5], [1.1, 1.0]])).requires_grad_(True)
    advantages = torch.tensor([1.0, -1.0])
    # clip_eps 0.2, per token max(-A r, -A clip(r, 0.8, 1.2)):
    #   r 1.5, A 1:  max(-1.5, -1.2) = -1.2 (clipped term active)
    #   r 0.5, A 1:  max(-0.5, -0.8) = -0.5
    #   r 1.1, A -1: max(1.1, 1.1)   = 1.1
    # policy loss (-1.2 - 0.5 + 1.1) / 3 = -0.2, clip fraction 1/3
    # k3 per token with ref = old = 0: 1/r - 1 + log r
    #   r 1.5: 0.6666667 - 1 + 0.4054651 = 0.0721318
    #   r 0.5: 2 - 1 - 0.6931472         = 0.3068528
    #   r 1.1: 0.9090909 - 1 + 0.0953102 = 0.0044011
    # mean (0.0721318 + 0.3068528 + 0.0044011) / 3 = 0.1277952
    loss, stats = grpo_policy_loss(logprobs, old, ref, advantages, mask, 0.2, kl_coef=0.1)
    assert stats["clip_fraction"] == pytest.approx(1 / 3)
    assert stats["kl_ref"] == pytest.approx(0.1277952, abs=1e-6)
    assert loss.item() == pytest.approx(-0.2 + 0.1 * 0.1277952, abs=1e-6)  # -0.1872205
    no_kl, _ = grpo_policy_loss(logprobs, old, ref, advantages, mask, 0.2, kl_coef=0.0)
    assert no_kl.item() == pytest.approx(-0.2, abs=1e-6)
    loss.backward()
    assert logprobs.grad[1, 1].item() == 0.0  # padding gets no gradient
