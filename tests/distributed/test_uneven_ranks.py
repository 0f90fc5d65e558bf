"""The on-policy loop on 2 ranks (torchrun, gloo) whose rollouts give different numbers of rows
(online DPO's pairs do): the ranks take the same steps, each step's gradient is the mean over
the rows all ranks hold in it, a rank without rows steps with weight 0, and the stats leave its
zero-weight steps out and sum the counts. ``uneven_update.py`` runs the loop; the expected
weights are computed here from its rows."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import uneven_update as toy
from launch import ENV, TIMEOUT_S


def _weights(weighted: bool) -> list[float]:
    """SGD's weights after every step: each step's gradient the rows' mean (``weighted``) or
    the plain mean of the ranks' minibatch means, a rank out of rows counting as its rows."""
    w = list(toy.W0)
    size = toy.MINIBATCH // 2
    for counts in toy.ROWS:
        for _ in range(toy.EPOCHS):
            for k in range(max(math.ceil(c / size) for c in counts)):
                held = [min(max(c - k * size, 0), size) for c in counts]
                share = [h / sum(held) for h in held] if weighted else [0.5, 0.5]
                for i in range(len(w)):
                    w[i] -= toy.LR * sum(s * a[i] for s, a in zip(share, toy.A, strict=True))
    return w


def test_ranks_with_different_row_counts_step_on_the_mean_over_all_rows(tmp_path: Path) -> None:
    script = Path(__file__).with_name("uneven_update.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(script), str(tmp_path)]  # fmt: skip
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-6000:]
    result = json.loads((tmp_path / "result.json").read_text())

    expected, naive = _weights(weighted=True), _weights(weighted=False)
    assert max(abs(a - b) for a, b in zip(expected, naive, strict=True)) > 0.1  # it can tell
    assert result["weights"] == pytest.approx(expected, abs=1e-6)
    history = result["history"]
    assert [h["rows/count"] for h in history] == [6.0, 3.0]  # summed, not averaged
    # Minibatch rows per real step: rank 0 (2, 2, 1) and rank 1 (1) each epoch, then rank 0
    # (2, 1) alone: rank 1's zero-weight steps are not in the stats.
    assert history[0]["loss/rows"] == pytest.approx((5 / 3 + 1) / 2)
    assert history[1]["loss/rows"] == pytest.approx(1.5)
