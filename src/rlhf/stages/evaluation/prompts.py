"""The held-out prompts an evaluation samples on, and the answers the data holds for them."""

from __future__ import annotations

from rlhf.data.artifacts import load_split
from rlhf.modeling.encoding import Messages


def load_eval_prompts(uri: str, max_prompts: int) -> tuple[list[Messages], list[str | None]]:
    """The first ``max_prompts`` prompts of the artifact's test split (all when
    ``max_prompts <= 0``) and each one's ``reference`` answer (None when it has none)."""
    rows = load_split(uri, "test")
    n_prompts = len(rows) if max_prompts <= 0 else min(len(rows), max_prompts)
    if n_prompts == 0:
        raise ValueError(f"{uri}: the test split has no prompts to evaluate on")
    rows = rows.select(range(n_prompts))
    return [r["prompt"] for r in rows], [r.get("reference") for r in rows]
