"""Reward heads, checked by hand: how the scalar head's per-token outputs become one score
(pooling), and the log_ratio head's beta * sum log(pi / ref)."""

import math

import pytest
import torch

from rlhf.modeling.encoding import Encoded
from rlhf.modeling.reward_scoring import log_ratio_scores, reward_scores


class _TokenIdModel(torch.nn.Module):
    """Stand-in reward model whose head outputs each position's token id, so scores can be
    worked out by hand; ``last`` reads the final non-pad position like HF's classifiers."""

    def __init__(self, pad_id: int) -> None:
        super().__init__()
        self.pad_id = pad_id
        self.score = torch.nn.Linear(1, 1, bias=False)
        torch.nn.init.ones_(self.score.weight)

    def base_model(self, input_ids, attention_mask, use_cache):
        return type("Out", (), {"last_hidden_state": input_ids.float().unsqueeze(-1)})

    def forward(self, input_ids, attention_mask):
        per_token = self.score(input_ids.float().unsqueeze(-1))
        last = attention_mask.sum(-1) - 1
        return type("Out", (), {"logits": per_token[torch.arange(len(last)), last]})


EXAMPLES = [Encoded([5, 1, 2], [0, 1, 1]), Encoded([7, 3], [0, 1])]  # prompt tokens masked 0


@pytest.mark.parametrize(
    ("pooling", "expected"),
    [
        ("last", [2.0, 3.0]),  # the last token's id
        ("sum", [3.0, 3.0]),  # 1 + 2 and 3: prompt and padding left out
        ("mean", [1.5, 3.0]),
    ],
)
def test_pooling_by_hand(pooling, expected):
    model = _TokenIdModel(pad_id=0)
    scores = reward_scores(model, EXAMPLES, pad_id=0, device=torch.device("cpu"), pooling=pooling)
    assert scores.tolist() == expected


def test_unknown_pooling_is_refused():
    with pytest.raises(ValueError, match="pooling must be one of"):
        reward_scores(_TokenIdModel(0), EXAMPLES, 0, torch.device("cpu"), pooling="max")


class _FixedLM(torch.nn.Module):
    """Stand-in causal LM over a 2-token vocabulary that predicts token 1 with probability
    ``p1`` at every position, whatever came before."""

    def __init__(self, p1: float) -> None:
        super().__init__()
        self.logits = torch.log(torch.tensor([1.0 - p1, p1]))

    def forward(self, input_ids, attention_mask, position_ids, use_cache):
        return type("Out", (), {"logits": self.logits.expand(*input_ids.shape, 2)})


def test_log_ratio_by_hand():
    # Answers "1 1" and "0" (the first token is the prompt). Model p(1) = 3/4, reference 1/2:
    # beta * sum_t log(pi / ref) = 0.5 * 2 * log(0.75 / 0.5) = log 1.5 and 0.5 * log(0.25 / 0.5).
    examples = [Encoded([0, 1, 1], [0, 1, 1]), Encoded([1, 0], [0, 1])]
    scores = log_ratio_scores(
        _FixedLM(0.75), _FixedLM(0.5), examples, pad_id=0, device=torch.device("cpu"), beta=0.5
    )
    assert scores.tolist() == pytest.approx([math.log(1.5), 0.5 * math.log(0.5)], abs=1e-6)
    # A model scored against itself gives exactly 0: the reward starts from nothing.
    same = _FixedLM(0.75)
    assert log_ratio_scores(same, same, examples, 0, torch.device("cpu"), 0.5).tolist() == [0, 0]
