"""SimPO, ORPO and KTO against numbers worked out by hand (in the comments).
softplus(x) = log(1 + e^x) = -log sigmoid(-x)."""

import pytest
import torch

from rlhf.algorithms.kto_loss import kto_kl_estimate, kto_loss
from rlhf.algorithms.orpo_loss import log_odds, orpo_loss
from rlhf.algorithms.simpo_loss import simpo_loss

# Two pairs. Summed log-probs and answer token counts give per-token means:
# chosen -4 / 4 = -1 and -6 / 2 = -3; rejected -6 / 3 = -2 and -3 / 3 = -1.
CHOSEN, CHOSEN_TOKENS = torch.tensor([-4.0, -6.0]), torch.tensor([4, 2])
REJECTED, REJECTED_TOKENS = torch.tensor([-6.0, -3.0]), torch.tensor([3, 3])


def test_simpo_loss_by_hand():
    # beta = 2: rewards chosen [-2, -6], rejected [-4, -2]; gamma = 1:
    # x = chosen - rejected - gamma = [2 - 1, -4 - 1] = [1, -5]; loss = softplus(-x):
    # softplus(-1) = log(1 + 0.3678794) = 0.3132617; softplus(5) = 5 + log(1 + e^-5) = 5.0067153
    out = simpo_loss(CHOSEN, REJECTED, CHOSEN_TOKENS, REJECTED_TOKENS, beta=2.0, gamma=1.0)
    assert out.losses.tolist() == pytest.approx([0.3132617, 5.0067153], abs=1e-6)
    assert out.loss.item() == pytest.approx(2.6599885, abs=1e-6)
    assert out.chosen_rewards.tolist() == pytest.approx([-2.0, -6.0])
    assert out.rejected_rewards.tolist() == pytest.approx([-4.0, -2.0])
    assert out.accuracy.item() == 0.5
    # Length normalisation: the same per-token mean at twice the length gives the same loss.
    doubled = simpo_loss(2 * CHOSEN, 2 * REJECTED, 2 * CHOSEN_TOKENS, 2 * REJECTED_TOKENS, 2.0, 1.0)
    assert doubled.losses.tolist() == pytest.approx(out.losses.tolist())


def test_orpo_loss_by_hand():
    # log odds(p) = log p - log(1 - p), with log p the per-token mean:
    # -1: 1 - e^-1 = 0.6321206, log = -0.4586751, odds = -0.5413249
    # -3: 1 - e^-3 = 0.9502129, log = -0.0510692, odds = -2.9489308
    # -2: 1 - e^-2 = 0.8646647, log = -0.1454135, odds = -1.8545865
    assert log_odds(torch.tensor([-1.0, -3.0, -2.0])).tolist() == pytest.approx(
        [-0.5413249, -2.9489308, -1.8545865], abs=1e-6
    )
    # log odds ratios: pair 1 -0.5413249 + 1.8545865 = 1.3132616, pair 2 -2.9489308 + 0.5413249
    # = -2.4076059. lambda = 0.1, NLL(chosen) = [1, 3]:
    # pair 1: 1 + 0.1 * softplus(-1.3132616) = 1 + 0.1 * log(1 + 0.2689414) = 1.0238180
    # pair 2: 3 + 0.1 * softplus(2.4076059) = 3 + 0.1 * (2.4076059 + log(1 + 0.0900306))
    #       = 3 + 0.1 * 2.4938120 = 3.2493812
    out = orpo_loss(CHOSEN, REJECTED, CHOSEN_TOKENS, REJECTED_TOKENS, orpo_lambda=0.1)
    assert out.losses.tolist() == pytest.approx([1.0238180, 3.2493812], abs=1e-6)
    assert out.margins.tolist() == pytest.approx([1.3132616, -2.4076059], abs=1e-6)
    # lambda = 0 is SFT on the chosen answers: the mean NLL per token.
    sft = orpo_loss(CHOSEN, REJECTED, CHOSEN_TOKENS, REJECTED_TOKENS, orpo_lambda=0.0)
    assert sft.losses.tolist() == pytest.approx([1.0, 3.0])
    # A certain answer (log p = 0) stays finite.
    assert torch.isfinite(log_odds(torch.tensor([0.0]))).all()


def test_reference_free_losses_send_gradient_to_both_answers():
    chosen, rejected = CHOSEN.clone().requires_grad_(True), REJECTED.clone().requires_grad_(True)
    orpo_loss(chosen, rejected, CHOSEN_TOKENS, REJECTED_TOKENS, 0.1).loss.backward()
    assert (chosen.grad < 0).all() and (rejected.grad > 0).all()  # up the chosen, down the rest
    with pytest.raises(ValueError, match="gamma"):
        simpo_loss(CHOSEN, REJECTED, CHOSEN_TOKENS, REJECTED_TOKENS, 2.0, -1.0)


def test_kto_loss_by_hand():
    # Mismatched pairs: policy [-6, -5], reference [-7, -5.5]: log-ratios [1, 0.5], mean 0.75.
    z0 = kto_kl_estimate(torch.tensor([-6.0, -5.0]), torch.tensor([-7.0, -5.5]))
    assert z0.item() == pytest.approx(0.75)
    # Rewards r = policy - ref = [-3 + 4, -5 + 4, -2 + 2] = [1, -1, 0]; labels good, bad, good;
    # beta = 2, lambda_D = 1, lambda_U = 1.5:
    # 1: good, 1 - sigmoid(2 * (1 - 0.75)) = 1 - sigmoid(0.5) = 1 - 0.6224593 = 0.3775407
    # 2: bad, 1.5 * (1 - sigmoid(2 * (0.75 + 1))) = 1.5 * (1 - 0.9706878) = 0.0439683
    # 3: good, 1 - sigmoid(2 * (0 - 0.75)) = 1 - 0.1824255 = 0.8175745
    # mean (0.3775407 + 0.0439683 + 0.8175745) / 3 = 0.4130278
    desirable = torch.tensor([True, False, True])
    out = kto_loss(torch.tensor([-3.0, -5.0, -2.0]), torch.tensor([-4.0, -4.0, -2.0]), desirable,
                   z0, beta=2.0, desirable_weight=1.0, undesirable_weight=1.5)  # fmt: skip
    assert out.losses.tolist() == pytest.approx([0.3775407, 0.0439683, 0.8175745], abs=1e-6)
    assert out.loss.item() == pytest.approx(0.4130278, abs=1e-6)
    assert out.rewards.tolist() == pytest.approx([1.0, -1.0, 0.0])
    # r > z0: [yes, no, no]; the labels ask [yes, no, yes]: 2 of 3 on their side.
    assert out.accuracy(desirable).item() == pytest.approx(2 / 3)


def test_kto_reference_point_is_clamped_at_zero_and_detached():
    policy = torch.tensor([-8.0, -6.0], requires_grad=True)
    z0 = kto_kl_estimate(policy, torch.tensor([-7.0, -5.5]))  # log-ratios [-1, -0.5]
    assert z0.item() == 0.0 and not z0.requires_grad
    logps = torch.tensor([-1.0, -1.0], requires_grad=True)
    kto_loss(
        logps, torch.tensor([-1.0, -1.0]), torch.tensor([True, False]), z0, 1.0
    ).loss.backward()
    # r = 0 = z0: sigmoid'(0) = 0.25, times beta 1, over B = 2: -0.125 for the desirable
    # answer (its loss falls as r rises), +0.125 for the undesirable one.
    assert logps.grad.tolist() == pytest.approx([-0.125, 0.125])
