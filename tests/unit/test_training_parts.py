"""Schedule, batching and checkpoint files."""

import random

import pytest
import torch

from rlhf.modeling.padding import pad_left, pad_right
from rlhf.training import checkpoint as ckpt
from rlhf.training.batching import length_grouped_batches
from rlhf.training.schedule import warmup_cosine, warmup_then


def test_warmup_cosine_by_hand():
    f = [warmup_cosine(s, total=10, warmup=2, min_ratio=0.1) for s in (0, 1, 2, 6, 10)]
    # warmup 1/2, 2/2; then 0.1 + 0.9 * (1 + cos(pi * progress)) / 2
    assert f == pytest.approx([0.5, 1.0, 1.0, 0.55, 0.1])


def test_on_policy_schedules_by_hand():
    constant = [warmup_then(i, total=4, warmup=2, decay="constant") for i in range(4)]
    assert constant == pytest.approx([0.5, 1.0, 1.0, 1.0])
    # warmup 1/2, 2/2, then times 1 - i/4
    linear = [warmup_then(i, total=4, warmup=2, decay="linear") for i in range(4)]
    assert linear == pytest.approx([0.5 * 1.0, 1.0 * 0.75, 0.5, 0.25])
    with pytest.raises(ValueError, match="'constant' or 'linear'"):
        warmup_then(0, total=4, warmup=2, decay="cosine")


def test_length_grouped_batches_cover_everything_once_and_cut_padding():
    rng = random.Random(0)
    lengths = [rng.randint(5, 200) for _ in range(1000)]
    batches = length_grouped_batches(lengths, batch_size=16, seed=3, epoch=0)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(1000))
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    assert padded < 1.15 * sum(lengths)  # random batches would pad to ~1.9x
    assert batches == length_grouped_batches(lengths, batch_size=16, seed=3, epoch=0)
    assert batches != length_grouped_batches(lengths, batch_size=16, seed=3, epoch=1)


def test_padding_sides():
    assert pad_right([[1, 2], [3]], 0).tolist() == [[1, 2], [3, 0]]
    assert pad_left([[1, 2], [3]], 0).tolist() == [[1, 2], [0, 3]]


def test_checkpoints_keep_newest_and_restore_rng(tmp_path):
    torch.manual_seed(1)
    for step in (5, 10, 15):
        ckpt.save_checkpoint(tmp_path, step, {"step": step, "rng": ckpt.capture_rng()}, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-00000010", "step-00000015"]
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path))
    expected = torch.rand(3)
    ckpt.restore_rng(state["rng"])
    assert torch.equal(torch.rand(3), expected)


def test_half_written_checkpoint_is_ignored(tmp_path):
    ckpt.save_checkpoint(tmp_path, 5, {"step": 5})
    (tmp_path / ".tmp-step-00000010").mkdir()  # a kill during the next save
    (tmp_path / "step-00000020").mkdir()  # no meta.json: not complete
    assert ckpt.latest_checkpoint(tmp_path).name == "step-00000005"
