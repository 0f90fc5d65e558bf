"""The reference log-prob cache file: values come back bit for bit as float32, only under
their key, and a file that is not a cache of this format (the JSON one written before, a
truncated write) is ignored, so the stage recomputes."""

import json

import torch

from rlhf.modeling import preference_logprobs
from rlhf.modeling.preference_logprobs import cache_bytes, read_reference_cache


def _logprobs(pairs: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(pairs)
    return {
        "train_chosen": -torch.rand(pairs, generator=g) * 100,
        "train_rejected": -torch.rand(pairs, dtype=torch.float64, generator=g) * 100,
        "val_chosen": torch.zeros(0),  # no validation split
        "val_rejected": (-torch.rand(2 * pairs, generator=g))[::2],  # not contiguous
    }


def test_cache_reads_back_bit_identical_float32(tmp_path):
    path = tmp_path / preference_logprobs.REFERENCE_CACHE
    logprobs = _logprobs(1000)
    path.write_bytes(cache_bytes("k1", logprobs))
    cached = read_reference_cache(path, "k1")
    assert cached is not None and cached.keys() == logprobs.keys()
    for name, value in logprobs.items():
        expected = value.to(torch.float32)  # what the JSON cache read back as well
        assert cached[name].dtype == torch.float32
        assert torch.equal(cached[name].view(torch.int32), expected.contiguous().view(torch.int32))


def test_cache_is_read_only_under_its_key(tmp_path):
    path = tmp_path / preference_logprobs.REFERENCE_CACHE
    assert read_reference_cache(path, "k1") is None  # none written yet
    path.write_bytes(cache_bytes("k1", _logprobs(10)))
    assert read_reference_cache(path, "k2") is None
    assert read_reference_cache(path, "k1") is not None


def test_other_files_are_ignored_not_errors(tmp_path):
    path = tmp_path / preference_logprobs.REFERENCE_CACHE
    old = {"key": "k1", "logprobs": {k: v.tolist() for k, v in _logprobs(10).items()}}
    path.write_text(json.dumps(old))  # the JSON format, even under the new name
    assert read_reference_cache(path, "k1") is None
    path.write_bytes(cache_bytes("k1", _logprobs(10))[:-7])  # a truncated file
    assert read_reference_cache(path, "k1") is None


def test_values_read_do_not_follow_the_file(tmp_path):
    """What is read is the caller's: a file rewritten in place afterwards changes nothing."""
    path = tmp_path / preference_logprobs.REFERENCE_CACHE
    logprobs = _logprobs(100)
    path.write_bytes(cache_bytes("k1", logprobs))
    cached = read_reference_cache(path, "k1")
    with path.open("r+b") as f:  # same inode, same size: zeros over the tensors' bytes
        header = 8 + int.from_bytes(f.read(8), "little")
        f.seek(header)
        f.write(bytes(path.stat().st_size - header))
    assert cached is not None
    assert torch.equal(cached["train_chosen"], logprobs["train_chosen"])
