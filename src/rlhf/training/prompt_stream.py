"""An endless, reproducible stream of prompt batches for RL stages.

Batch ``i`` is a pure function of (seed, i): the prompts are reshuffled every pass, and a
resumed run asks for batch ``i`` and gets exactly what the killed run would have had. So the
position in the stream is just the iteration number, which checkpoints already hold."""

from __future__ import annotations

import random
from array import array
from functools import lru_cache


def batch_indices(n: int, batch_size: int, seed: int, iteration: int) -> list[int]:
    """Indices into ``n`` prompts for batch ``iteration`` of size ``batch_size``."""
    if n == 0:
        raise ValueError("no prompts to sample from")
    out: list[int] = []
    start = iteration * batch_size
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), n)
        order = _epoch_order(n, seed, epoch)
        take = min(batch_size - len(out), n - offset)
        out += order[offset : offset + take].tolist()
    return out


# A pass's order is drawn once, not once per batch: shuffling n prompts costs O(n), which a
# batch of a few prompts from a large set would otherwise pay every iteration. Four entries:
# a batch may span two passes, and PPO-ptx draws from a second stream.
@lru_cache(maxsize=4)
def _epoch_order(n: int, seed: int, epoch: int) -> array:
    """Pass ``epoch``'s order of ``0..n-1``: the draws ``random.shuffle`` makes on a list of
    ``n`` ints, kept as 8 bytes a prompt rather than a list of Python ints."""
    order = array("q", range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)  # type: ignore[arg-type]
    return order
