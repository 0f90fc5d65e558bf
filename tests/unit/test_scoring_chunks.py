"""Scoring a rollout a few rows per forward (``scoring_batch_size``): the same log-probs,
entropies and values as one forward over every row, in row order, to float rounding."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

from rlhf.config import GRPOConfig, PPOConfig
from rlhf.modeling.forward import TokenValues, response_logprobs, response_values

SHAPE = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, pad_token_id=0)  # fmt: skip


def rollout(rows=7, prompt=5, response=4):
    torch.manual_seed(0)
    ids = torch.randint(1, 64, (rows, prompt + response))
    mask = torch.ones_like(ids)
    mask[::2, :2] = 0  # left padding on every other prompt
    return ids, mask, prompt


@pytest.mark.parametrize("rows_per_forward", [1, 3, 7, 100])
def test_chunked_scoring_gives_what_one_forward_gives(rows_per_forward):
    torch.manual_seed(1)
    policy = LlamaForCausalLM(LlamaConfig(**SHAPE)).eval()
    critic = TokenValues(LlamaForSequenceClassification(LlamaConfig(num_labels=1, **SHAPE)).eval())
    ids, mask, width = rollout()
    with torch.no_grad():
        whole, whole_entropy = response_logprobs(policy, ids, mask, width, 0.7, True)
        parts, parts_entropy = response_logprobs(
            policy, ids, mask, width, 0.7, True, rows_per_forward=rows_per_forward
        )
        values = response_values(critic, ids, mask, width)
        value_parts = response_values(critic, ids, mask, width, rows_per_forward=rows_per_forward)
    assert parts.shape == whole.shape == (7, 4) and value_parts.shape == values.shape == (7, 4)
    torch.testing.assert_close(parts, whole, rtol=0, atol=1e-6)
    torch.testing.assert_close(parts_entropy, whole_entropy, rtol=0, atol=1e-6)
    torch.testing.assert_close(value_parts, values, rtol=0, atol=1e-6)


def test_rows_per_forward_is_the_batch_the_model_sees():
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            seen.append(len(input_ids))
            return input_ids.float()

    ids, mask, width = rollout()
    values = response_values(Recorder(), ids, mask, width, rows_per_forward=3)
    assert seen == [3, 3, 1]
    assert torch.equal(values, ids[:, width - 1 : -1].float())  # rows in their order


def test_scoring_batch_size_is_checked():
    assert GRPOConfig().scoring_batch_size is None
    assert PPOConfig(scoring_batch_size=8).scoring_batch_size == 8
    with pytest.raises(ValueError, match="scoring_batch_size must be >= 1"):
        GRPOConfig(scoring_batch_size=0)
