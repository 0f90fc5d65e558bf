"""Reward pooling: how the head's per-token outputs become one score, checked by hand."""

import pytest
import torch

from rlhf.encoding import Encoded
from rlhf.reward_scoring import reward_scores


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
