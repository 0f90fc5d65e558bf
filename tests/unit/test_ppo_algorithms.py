"""PPO building blocks against numbers worked out by hand (in the comments)."""

import math

import pytest
import torch

from rlhf.algorithms.gae import gae_advantages
from rlhf.algorithms.kl import kl_penalty, sequence_kl
from rlhf.algorithms.kl_control import (
    AdaptiveKLController,
    AdaptivePenaltyCoef,
    FixedKLController,
    make_kl_controller,
)
from rlhf.algorithms.ppo_loss import (
    clipped_value_loss,
    explained_variance,
    ppo_clip_policy_loss,
    ppo_penalty_policy_loss,
)
from rlhf.algorithms.rewards import RunningMoments, normalize_and_clip_scores, token_level_rewards
from rlhf.algorithms.whiten import masked_whiten

# ---------------------------------------------------------------------------- whitening


def test_masked_whiten_by_hand():
    values = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    # Over [1, 2, 3]: mean 2, population var (1 + 0 + 1) / 3 = 2/3, std 0.816497;
    # (x - 2) / 0.816497 = [-1.224745, 0, 1.224745]; the masked 100 comes back as 0.
    out = masked_whiten(values, mask)
    assert out[0].tolist() == pytest.approx([-1.224745, 0.0, 1.224745, 0.0], abs=1e-6)
    # shift_mean=False adds the mean 2 back: [0.775255, 2, 3.224745], padding still 0.
    kept = masked_whiten(values, mask, shift_mean=False)
    assert kept[0].tolist() == pytest.approx([0.775255, 2.0, 3.224745, 0.0], abs=1e-6)


def test_masked_whiten_of_a_constant_is_zero_not_nan():
    out = masked_whiten(torch.full((2, 3), 5.0), torch.ones(2, 3))
    assert torch.equal(out, torch.zeros(2, 3))


# ---------------------------------------------------------------------------- KL


def test_kl_estimators_by_hand():
    logp, logref = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-2.0, -1.0]])
    # Token 0: logp - logref = 1.   k1 = 1, k2 = 0.5 * 1^2 = 0.5,
    #   k3 = (exp(-1) - 1) - (-1) = exp(-1) = 0.367879.
    # Token 1: logp - logref = -1.  k1 = -1, k2 = 0.5,
    #   k3 = (exp(1) - 1) - 1 = e - 2 = 0.718282.
    assert kl_penalty(logp, logref, "k1")[0].tolist() == pytest.approx([1.0, -1.0])
    assert kl_penalty(logp, logref, "k2")[0].tolist() == pytest.approx([0.5, 0.5])
    assert kl_penalty(logp, logref, "k3")[0].tolist() == pytest.approx(
        [0.367879, 0.718282], abs=1e-6
    )
    assert kl_penalty(logp, logref)[0].tolist() == pytest.approx([1.0, -1.0])  # k1 by default


def test_kl_unknown_estimator_names_the_known_ones():
    with pytest.raises(ValueError, match="k1, k2, k3"):
        kl_penalty(torch.zeros(1, 1), torch.zeros(1, 1), "k4")


def test_k3_is_never_negative():
    g = torch.Generator().manual_seed(0)
    logp = torch.randn(64, 32, generator=g) * 3
    logref = torch.randn(64, 32, generator=g) * 3
    assert (kl_penalty(logp, logref, "k3") >= 0).all()


def test_sequence_kl_sums_real_tokens():
    per_token = torch.tensor([[1.0, 2.0, 4.0], [1.0, 1.0, 1.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert sequence_kl(per_token, mask).tolist() == pytest.approx([3.0, 3.0])


# ---------------------------------------------------------------------------- rewards


def test_token_level_rewards_put_score_on_last_real_token():
    scores = torch.tensor([2.0, 3.0, 7.0])
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.5, 0.5], [1.0, 1.0, 1.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    # kl_coef 0.1. Row 0: [-0.01, -0.02, -0.03 + 2] ; row 1 (one real token, then padding):
    # [-0.05 + 3, 0, 0] ; row 2 (no real token): nothing at all.
    out = token_level_rewards(scores, kl, mask, kl_coef=0.1)
    assert out.tolist() == [
        pytest.approx([-0.01, -0.02, 1.97]),
        pytest.approx([2.95, 0.0, 0.0]),
        pytest.approx([0.0, 0.0, 0.0]),
    ]


def test_running_moments_equal_moments_of_concatenated_batches():
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(n, generator=g) * 3 + 1 for n in (5, 1, 17, 8)]
    rm = RunningMoments()
    for b in batches:
        rm.update(b)
    everything = torch.cat(batches).double()
    assert rm.count == 31
    assert rm.mean == pytest.approx(everything.mean().item(), rel=1e-9)
    assert rm.var == pytest.approx(everything.var(unbiased=False).item(), rel=1e-9)
    restored = RunningMoments()
    restored.load_state_dict(rm.state_dict())
    assert restored.state_dict() == rm.state_dict()


def test_normalize_and_clip_scores_by_hand():
    scores = torch.tensor([1.0, 2.0, 3.0])
    # No running moments: only clipping to [-1.5, 1.5].
    assert normalize_and_clip_scores(scores, None, 1.5).tolist() == [1.0, 1.5, 1.5]
    assert normalize_and_clip_scores(scores, None, None).tolist() == [1.0, 2.0, 3.0]
    # First batch is merged first, so it is normalised by its own mean 2, std sqrt(2/3):
    # [-1.224745, 0, 1.224745], then clipped to [-1, 1].
    rm = RunningMoments()
    out = normalize_and_clip_scores(scores, rm, None)
    assert out.tolist() == pytest.approx([-1.224745, 0.0, 1.224745], abs=1e-6)
    rm = RunningMoments()
    assert normalize_and_clip_scores(scores, rm, 1.0).tolist() == pytest.approx([-1.0, 0.0, 1.0])


# ---------------------------------------------------------------------------- GAE


def test_gae_by_hand():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 5.0]])
    values = torch.tensor([[0.5, 0.6, 0.7], [0.5, 0.6, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv, ret = gae_advantages(rewards, values, mask, gamma=0.9, lam=0.8)
    # gamma * lam = 0.72. Row 0 (all real; nothing after t=2, so V_3 * m_3 = 0):
    #   t=2: delta = 1 - 0.7 = 0.3                      A = 0.3
    #   t=1: delta = 0 + 0.9 * 0.7 - 0.6 = 0.03         A = 0.03 + 0.72 * 0.3   = 0.246
    #   t=0: delta = 0 + 0.9 * 0.6 - 0.5 = 0.04         A = 0.04 + 0.72 * 0.246 = 0.21712
    #   returns = A + V = [0.71712, 0.846, 1.0]
    # Row 1 (t=2 is padding: its reward 5 and value 9 are ignored, m_2 = 0):
    #   t=1: delta = 1 - 0.6 = 0.4                      A = 0.4
    #   t=0: delta = 0.9 * 0.6 - 0.5 = 0.04             A = 0.04 + 0.72 * 0.4 = 0.328
    #   returns = [0.828, 1.0, 0 (padding)]
    assert adv.tolist() == [
        pytest.approx([0.21712, 0.246, 0.3]),
        pytest.approx([0.328, 0.4, 0.0]),
    ]
    assert ret.tolist() == [
        pytest.approx([0.71712, 0.846, 1.0]),
        pytest.approx([0.828, 1.0, 0.0]),
    ]


def test_gae_with_unit_gamma_and_lambda_is_reward_to_go_minus_value():
    g = torch.Generator().manual_seed(2)
    rewards, values = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    lengths = torch.tensor([6, 3, 1, 0])
    mask = (torch.arange(6)[None, :] < lengths[:, None]).long()
    adv, ret = gae_advantages(rewards, values, mask, gamma=1.0, lam=1.0)
    # Reward-to-go over real tokens: reversed cumulative sum of the masked rewards.
    to_go = (rewards * mask).flip(1).cumsum(1).flip(1)
    assert torch.allclose(adv, (to_go - values) * mask, atol=1e-6)
    assert torch.allclose(ret, to_go * mask, atol=1e-6)


# ---------------------------------------------------------------------------- policy losses


def _clip_case():
    # Ratios 1.5, 1.5, 0.5, 0.5 with A = +1, -1, +1, -1, then one padding token (ratio e^5).
    ratios = torch.tensor([[1.5, 1.5, 0.5, 0.5, math.exp(5.0)]])
    old = torch.zeros(1, 5)
    logp = ratios.log().requires_grad_(True)
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    return logp, old, adv, mask


def test_ppo_clip_loss_by_hand():
    logp, old, adv, mask = _clip_case()
    loss, stats = ppo_clip_policy_loss(logp, old, adv, mask, clip_eps=0.2)
    # max(-A * ratio, -A * clip(ratio, 0.8, 1.2)) per token:
    #   ratio 1.5, A=+1: max(-1.5, -1.2) = -1.2   clipped term active (no gain past 1.2)
    #   ratio 1.5, A=-1: max( 1.5,  1.2) =  1.5   unclipped (a bad move is never forgiven)
    #   ratio 0.5, A=+1: max(-0.5, -0.8) = -0.5   unclipped
    #   ratio 0.5, A=-1: max( 0.5,  0.8) =  0.8   clipped term active
    # loss = (-1.2 + 1.5 - 0.5 + 0.8) / 4 = 0.15; clip_fraction = 2 / 4.
    assert loss.item() == pytest.approx(0.15, abs=1e-6)
    assert stats["clip_fraction"] == pytest.approx(0.5)
    assert stats["ratio_mean"] == pytest.approx(1.0)
    # approx_kl (k2) = 0.5 * mean(ln1.5^2, ln1.5^2, ln2^2, ln2^2)
    #   = 0.25 * (0.164402 + 0.480453) = 0.161214
    assert stats["approx_kl"] == pytest.approx(0.161214, abs=1e-6)
    assert all(isinstance(v, float) for v in stats.values())
    # Gradient d loss / d logp = (1/4) * d(-A * ratio)/d logp = -A * ratio / 4 where the
    # unclipped term is active, 0 where the clipped (constant) one is, 0 on padding.
    loss.backward()
    assert logp.grad[0].tolist() == pytest.approx([0.0, 0.375, -0.125, 0.0, 0.0])


def test_ppo_penalty_loss_by_hand():
    logp = torch.tensor([[math.log(2.0), 0.0, 3.0]])
    old = torch.zeros(1, 3)
    adv = torch.tensor([[1.0, -1.0, 50.0]])
    mask = torch.tensor([[1, 1, 0]])
    loss, stats = ppo_penalty_policy_loss(logp, old, adv, mask, beta=0.5)
    # ratios 2 and 1: surrogate = mean(-2 * 1, -1 * -1) = (-2 + 1) / 2 = -0.5
    # k3 = (r - 1) - ln r: (2 - 1) - ln 2 = 0.306853 and 0; mean KL(old||new) = 0.153426
    # loss = -0.5 + 0.5 * 0.153426 = -0.423287
    assert loss.item() == pytest.approx(-0.423287, abs=1e-6)
    assert stats["kl_old_new"] == pytest.approx(0.153426, abs=1e-6)
    # k2: 0.5 * mean(ln2^2, 0) = 0.25 * 0.480453 = 0.120113
    assert stats["approx_kl"] == pytest.approx(0.120113, abs=1e-6)
    assert stats["ratio_mean"] == pytest.approx(1.5)


# ---------------------------------------------------------------------------- value loss


def test_clipped_value_loss_by_hand():
    values = torch.tensor([[1.0, 0.1, -1.0, 7.0]])
    old = torch.zeros(1, 4)
    returns = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    loss, stats = clipped_value_loss(values, old, returns, mask, clip_range=0.2)
    # c = 0.2 around old value 0, so V is clipped into [-0.2, 0.2]:
    #   V=1:    (1-1)^2 = 0,     clipped (0.2-1)^2  = 0.64 -> 0.64 (clipped active)
    #   V=0.1:  (0.1-1)^2 = 0.81, clipped identical  = 0.81 -> 0.81 (not active: equal)
    #   V=-1:   (-1-1)^2 = 4,    clipped (-0.2-1)^2 = 1.44 -> 4    (unclipped)
    # loss = 0.5 * (0.64 + 0.81 + 4) / 3 = 0.908333; value_clip_fraction = 1/3.
    assert loss.item() == pytest.approx(0.908333, abs=1e-6)
    assert stats["value_clip_fraction"] == pytest.approx(1 / 3)
    # Clipping off: 0.5 * (0 + 0.81 + 4) / 3 = 0.801667.
    for off in (None, 0.0):
        loss, stats = clipped_value_loss(values, old, returns, mask, clip_range=off)
        assert loss.item() == pytest.approx(0.801667, abs=1e-6)
        assert stats["value_clip_fraction"] == 0.0


def test_explained_variance_by_hand():
    returns = torch.tensor([[1.0, 2.0, 3.0, 50.0]])
    values = torch.tensor([[1.0, 2.0, 2.0, -50.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    # R - V = [0, 0, 1]: mean 1/3, var (1/9 + 1/9 + 4/9) / 3 = 2/9. Var R = 2/3.
    # 1 - (2/9) / (2/3) = 2/3.
    assert explained_variance(values, returns, mask) == pytest.approx(2 / 3)
    assert math.isnan(explained_variance(values, torch.ones(1, 4), mask))


# ---------------------------------------------------------------------------- KL control


def test_adaptive_kl_controller_by_hand():
    ctl = AdaptiveKLController(init_coef=0.2, target=6.0, horizon=10000)
    # current = 2 * target: e = 12/6 - 1 = 1, clipped to 0.2;
    # coef = 0.2 * (1 + 0.2 * 256 / 10000) = 0.2 * 1.00512 = 0.201024
    ctl.update(12.0, n_steps=256)
    assert ctl.value == pytest.approx(0.201024)
    # Unclipped error: e = 6.6/6 - 1 = 0.1; coef = 0.2 * (1 + 0.1 * 256 / 10000) = 0.200512
    small = AdaptiveKLController(0.2, 6.0, 10000)
    small.update(6.6, n_steps=256)
    assert small.value == pytest.approx(0.200512)
    # Below target: e = 3/6 - 1 = -0.5 -> -0.2; 0.201024 * (1 - 0.00512) = 0.199995
    ctl.update(3.0, n_steps=256)
    assert ctl.value == pytest.approx(0.201024 * 0.99488)
    restored = AdaptiveKLController(1.0, 6.0, 10000)
    restored.load_state_dict(ctl.state_dict())
    assert restored.value == ctl.value


def test_fixed_kl_controller_and_factory():
    fixed = make_kl_controller("fixed", 0.05)
    assert isinstance(fixed, FixedKLController)
    fixed.update(100.0, 1000)
    assert fixed.value == 0.05
    other = FixedKLController(1.0)
    other.load_state_dict(fixed.state_dict())
    assert other.value == 0.05
    adaptive = make_kl_controller("adaptive", 0.1, 6.0, 10000)
    assert isinstance(adaptive, AdaptiveKLController)
    with pytest.raises(ValueError):
        make_kl_controller("adaptive", 0.1)
    with pytest.raises(ValueError, match="adaptive, fixed"):
        make_kl_controller("pid", 0.1, 6.0, 10000)


def test_adaptive_penalty_coef_doubles_and_halves():
    beta = AdaptivePenaltyCoef(init=1.0, target_kl=0.01)
    # Thresholds: target / 1.5 = 0.00667, target * 1.5 = 0.015.
    assert beta.update(0.02) == 2.0  # 0.02 > 0.015: double
    assert beta.update(0.005) == 1.0  # 0.005 < 0.00667: halve
    assert beta.update(0.01) == 1.0  # inside the band: unchanged
    assert beta.update(0.001) == 0.5
    restored = AdaptivePenaltyCoef(init=3.0, target_kl=0.01)
    restored.load_state_dict(beta.state_dict())
    assert restored.value == 0.5
