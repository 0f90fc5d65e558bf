"""Losses against values worked out by hand."""

import math

import pytest
import torch

from rlhf.algorithms.logprobs import token_entropy, token_logprobs
from rlhf.algorithms.masked import masked_mean
from rlhf.algorithms.reward_loss import pairwise_accuracy, pairwise_reward_loss
from rlhf.algorithms.sft_loss import response_nll


def _logits():
    # Vocabulary of 2. Position 0: logits [ln 3, 0] -> p = [3/4, 1/4]. Positions 1, 2: uniform.
    return torch.tensor([[[math.log(3.0), 0.0], [0.0, 0.0], [0.0, 0.0]]])


def test_token_logprobs_by_hand():
    ids = torch.tensor([[0, 1, 0]])
    # token 1 after position 0: log 1/4; token 0 after position 1: log 1/2
    assert token_logprobs(_logits(), ids)[0].tolist() == pytest.approx(
        [math.log(0.25), math.log(0.5)]
    )


def test_token_entropy_by_hand():
    h0 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))  # 0.562335
    assert token_entropy(_logits())[0].tolist() == pytest.approx([h0, math.log(2)])


def test_response_nll_counts_only_masked_tokens():
    ids = torch.tensor([[0, 1, 0]])
    both = response_nll(_logits(), ids, torch.tensor([[0, 1, 1]]))
    assert both.item() == pytest.approx((math.log(4) + math.log(2)) / 2)  # 1.0397208
    last = response_nll(_logits(), ids, torch.tensor([[0, 0, 1]]))
    assert last.item() == pytest.approx(math.log(2))  # 0.6931472


def test_masked_mean_by_hand():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1, 0, 1], [0, 0, 0]])
    assert masked_mean(values, mask).item() == pytest.approx(2.0)
    assert masked_mean(values, mask, dim=1).tolist() == pytest.approx([2.0, 0.0])


def test_pairwise_reward_loss_by_hand():
    chosen, rejected = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 0.0])
    # -log sigmoid(2) = 0.126928, -log sigmoid(0) = 0.693147
    assert pairwise_reward_loss(chosen, rejected).item() == pytest.approx(0.4100376, abs=1e-6)
    # margin 1 on the first pair: -log sigmoid(1) = 0.313262
    margin = torch.tensor([1.0, 0.0])
    assert pairwise_reward_loss(chosen, rejected, margin).item() == pytest.approx(
        0.5032044, abs=1e-6
    )
    assert pairwise_accuracy(chosen, rejected).item() == pytest.approx(0.5)


def test_pairwise_reward_loss_is_stable_for_large_gaps():
    loss = pairwise_reward_loss(torch.tensor([-200.0]), torch.tensor([0.0]))
    assert loss.item() == pytest.approx(200.0)
