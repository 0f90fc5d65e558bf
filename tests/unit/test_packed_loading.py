"""The stages' data loading that no longer grows by Python objects per row: packed token ids,
the prompt stream's cached pass order and the on-policy prompt set give back exactly what the
lists they replace gave (same values, same batches, same order)."""

from __future__ import annotations

import random

import datasets
import pytest
import torch

from rlhf.modeling.encoding import Encoded
from rlhf.modeling.forward import heldout_nll
from rlhf.modeling.packed import PackedEncoded, PackedIds, PackedRecords
from rlhf.stages import dpo, kto, reward
from rlhf.stages.on_policy import PromptSet
from rlhf.training import prompt_stream
from rlhf.training.prompt_stream import batch_indices


def test_packed_ids_give_back_each_list():
    rows = [[5, 300_000, 2], [], [70_000]]
    packed = PackedIds(rows)
    assert len(packed) == 3 and list(packed) == rows
    assert packed[-1] == [70_000] and packed[0:2] == rows[:2]
    assert [packed.length(i) for i in range(3)] == [3, 0, 1]
    assert packed.nbytes() == 4 * 4 + 3 * 8  # 4 bytes a token, 8 an example
    with pytest.raises(IndexError):
        packed[3]


def test_packed_encoded_gives_back_equal_examples():
    examples = [Encoded([1, 2, 3], [0, 1, 1]), Encoded([9], [1]), Encoded([], [])]
    packed = PackedEncoded(examples)
    assert list(packed) == examples and packed[1] == examples[1]
    assert packed[1:] == examples[1:]
    assert packed.lengths().tolist() == [3, 1, 0]
    assert packed.nbytes() == 4 * 4 + 3 * 8 + 4


def test_packed_records_give_back_equal_pairs_of_each_stage():
    a, b, c = Encoded([1, 2, 3], [0, 1, 1]), Encoded([9], [1]), Encoded([4, 5], [0, 1])
    cases = [
        (dpo.Pair, [dpo.Pair(a, b, 1), dpo.Pair(c, a, -1), dpo.Pair(b, b, 0)]),
        (reward.Pair, [reward.Pair(a, b, 0.5, 1), reward.Pair(c, a, 0.0, 0)]),
        (kto.Example, [kto.Example(a, c, True), kto.Example(b, a, False)]),
    ]
    for record_type, records in cases:
        packed = PackedRecords(record_type, records)
        assert len(packed) == len(records) and list(packed) == records
        assert packed[-1] == records[-1] and packed[1:] == records[1:]
        assert packed.lengths().tolist() == [len(r) for r in records]
    desirable = PackedRecords(kto.Example, cases[2][1])[0].desirable
    assert desirable is True  # a bool again, not the byte it is stored as
    # two answers of 3 and 1 tokens: 4 bytes a token and 1 of mask, 8 an answer, 8 the order
    assert PackedRecords(dpo.Pair, cases[0][1][:1]).nbytes() == 4 * 4 + 4 + 8 * 2 + 8


def test_packed_records_columns():
    a = Encoded([1, 2], [0, 1])
    pairs = PackedRecords(reward.Pair, [reward.Pair(a, a, 0.0, 1), reward.Pair(a, a, 1.5, -1)])
    assert pairs.column("margin").tolist() == [0.0, 1.5]
    assert pairs.column("gold_order").tolist() == [1, -1]
    with pytest.raises(TypeError, match="chosen holds encoded examples"):
        pairs.column("chosen")
    with pytest.raises(IndexError):
        pairs[2]


def test_packed_records_refuse_what_they_cannot_pack():
    from dataclasses import dataclass

    @dataclass
    class Tagged:
        answer: Encoded
        tag: str

    with pytest.raises(TypeError, match="Tagged.tag: a field of type str cannot be packed"):
        PackedRecords(Tagged)
    with pytest.raises(TypeError, match="is not a dataclass"):
        PackedRecords(Encoded.__class__)


def _list_batch_indices(n, batch_size, seed, iteration):
    """The stream as it was before the pass order was cached: a list shuffled per batch."""
    out = []
    start = iteration * batch_size
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), n)
        order = list(range(n))
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        take = min(batch_size - len(out), n - offset)
        out += order[offset : offset + take]
    return out


def test_prompt_stream_batches_are_the_ones_the_list_version_drew():
    # Recorded from the list version (hand-checked: 5 prompts, batches of 3 cross passes).
    assert [batch_indices(5, 3, 0, i) for i in range(3)] == [[2, 1, 0], [4, 3, 2], [3, 4, 0]]
    assert batch_indices(5, 7, 2, 1) == [2, 3, 4, 4, 0, 1, 3]
    assert batch_indices(1, 3, 4, 2) == [0, 0, 0]
    prompt_stream._epoch_order.cache_clear()
    for n, size, seed in [(7, 3, 0), (10, 4, 1), (3, 8, 5), (50, 16, 2)]:
        for iteration in range(12):
            want = _list_batch_indices(n, size, seed, iteration)
            assert batch_indices(n, size, seed, iteration) == want
    with pytest.raises(ValueError, match="no prompts"):
        batch_indices(0, 2, 0, 0)


def test_prompt_set_gives_the_messages_and_ids_the_lists_gave():
    prompts = [[{"role": "user", "content": f"q{i}"}] for i in range(5)]
    rows = datasets.Dataset.from_dict({"prompt": prompts})
    ids = [[i, i + 1000] for i in range(5)]
    prompt_set = PromptSet(rows, PackedIds(ids))
    picked = [3, 3, 0, 4]  # GRPO repeats each prompt of a group
    assert len(prompt_set) == 5
    assert prompt_set.messages(picked) == [prompts[i] for i in picked]
    assert prompt_set.token_ids(picked) == [ids[i] for i in picked]
    assert prompt_set.messages([]) == []


class _Counting(torch.nn.Module):
    """A model whose log-prob of every token is -1: heldout_nll is then 1 whatever the order,
    so the test records the batches instead."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.batches = []

    def forward(self, input_ids, attention_mask, **_):
        self.batches.append(input_ids[:, 0].tolist())
        vocab = 4
        logits = torch.zeros(*input_ids.shape, vocab) + self.w
        return type("Out", (), {"logits": logits})()


def test_heldout_batches_follow_the_stable_length_order():
    examples = [Encoded([3, 1, 1], [0, 1, 1]), Encoded([0, 1], [0, 1]), Encoded([2, 1], [0, 1]),
                Encoded([1, 1, 1, 1], [0, 1, 1, 1])]  # fmt: skip
    for given in (examples, PackedEncoded(examples)):
        model = _Counting()
        heldout_nll(model, given, pad_id=0, batch_size=2)
        # sorted(examples, key=len) was [1, 2, 0, 3]; first tokens 0, 2 | 3, 1
        assert model.batches == [[0, 2], [3, 1]]


def test_sft_batches_from_packed_lengths_are_the_ones_the_list_gave():
    from rlhf.training.batching import length_grouped_batches

    examples = [Encoded([1] * (1 + (i * 7) % 11), [1] * (1 + (i * 7) % 11)) for i in range(40)]
    as_list = [len(e) for e in examples]
    packed = PackedEncoded(examples).lengths()
    for epoch in range(3):
        assert length_grouped_batches(packed, 4, 3, epoch, group=2) == length_grouped_batches(
            as_list, 4, 3, epoch, group=2
        )
