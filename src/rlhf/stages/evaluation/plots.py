"""The report's plots, each an inline base64 PNG drawn with matplotlib's Agg canvas."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from typing import Any

from rlhf.stages.evaluation.compared import CANDIDATE, REFERENCE, ModelResult

# Training-history keys plotted in the report, with their titles.
HISTORY_PLOTS = (
    ("reward/score_mean", "RM score (mean)"),
    ("kl/mean", "KL(policy || reference) per response"),
    ("gold/mean", "gold reward (mean)"),
)


def png(draw: Callable[[Any], None], alt: str, size: tuple[float, float]) -> str:
    """An <img> with the figure ``draw(fig)`` fills, as an inline base64 PNG (matplotlib's Agg
    canvas; no pyplot, no global backend change). A note when matplotlib is missing."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return '<p class="note">(matplotlib is not installed: plot skipped)</p>'
    fig = Figure(figsize=size, dpi=100, layout="constrained")
    draw(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt, quote=True)}" src="data:image/png;base64,{data}">'


def history_plot(history: list[dict[str, Any]]) -> str | None:
    """One panel per ``HISTORY_PLOTS`` key the history holds, over the iterations; None when
    it holds none of them."""
    keys = [(k, t) for k, t in HISTORY_PLOTS if any(k in h for h in history)]
    if not keys:
        return None

    def draw(fig: Any) -> None:
        axes = fig.subplots(1, len(keys), squeeze=False)[0]
        for ax, (key, title) in zip(axes, keys, strict=True):
            points = [(h["step"], h[key]) for h in history if key in h and h[key] is not None]
            ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", linewidth=1)
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("iteration")
            ax.grid(alpha=0.3)

    return png(draw, "reward, KL and gold reward over RL iterations", (4.2 * len(keys), 3.2))


def histograms(results: dict[str, ModelResult]) -> str:
    """Candidate's and reference's score distributions overlaid, one panel per judge (RM,
    gold) both have; a note when neither has scores."""
    cand, ref = results[CANDIDATE], results[REFERENCE]
    panels = []
    if cand.rm_scores is not None and ref.rm_scores is not None:
        panels.append(("RM score", cand.rm_scores, ref.rm_scores))
    if cand.gold_scores is not None and ref.gold_scores is not None:
        panels.append(("gold reward", cand.gold_scores, ref.gold_scores))

    def draw(fig: Any) -> None:
        import numpy as np

        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (title, a, b) in zip(axes, panels, strict=True):
            bins = np.histogram_bin_edges(np.asarray(a + b, dtype=float), bins=30)
            ax.hist(a, bins=bins, alpha=0.55, label=CANDIDATE, color="tab:blue")
            ax.hist(b, bins=bins, alpha=0.55, label=REFERENCE, color="tab:orange")
            ax.set_title(f"{title}: candidate vs reference", fontsize=10)
            ax.set_ylabel("responses")
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)

    if not panels:
        return '<p class="note">No reward model and no gold reward: no scores to plot.</p>'
    return png(draw, "score distributions, candidate vs reference", (4.8 * len(panels), 3.2))
