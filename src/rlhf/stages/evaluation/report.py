"""The evaluation's report: one self-contained HTML page (inline CSS and PNGs, every text
escaped) with the headline comparisons, every model's means, the champion gate, all metrics,
the candidate's training history, score distributions, side-by-side samples and settings."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from rlhf.config import EvalConfig, to_dict
from rlhf.modeling.encoding import Messages
from rlhf.stages.champion_gate import GateDecision
from rlhf.stages.evaluation.compared import CANDIDATE, REFERENCE, ModelResult
from rlhf.stages.evaluation.history import TrainingHistory
from rlhf.stages.evaluation.plots import HISTORY_PLOTS, histograms, history_plot
from rlhf.stages.specs import EvalInputs

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; max-width: 80em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; vertical-align: top; text-align: left; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { white-space: pre-wrap; margin: 0; font-size: 0.9em; max-width: 40em; }
.note { color: #666; }
img { max-width: 100%; height: auto; }  /* plots shrink to the window, never clip */
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.6g}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int = 1) -> str:
    """Cells are HTML already (escape text before passing it)."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{c}</td>' if i >= numeric_from else f"<td>{c}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _prompt_text(messages: Messages) -> str:
    if len(messages) == 1 and messages[0].get("role") == "user":
        return messages[0]["content"]
    return "\n\n".join(f"[{m['role']}] {m['content']}" for m in messages)


def render_report(
    config: EvalConfig,
    inputs: EvalInputs,
    metrics: dict[str, float],
    results: dict[str, ModelResult],
    prompts: list[Messages],
    data_answers: list[str | None],
    history: TrainingHistory,
    gate: GateDecision | None = None,
) -> str:
    """One self-contained HTML page (inline CSS and PNGs; every text escaped)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>rlhf evaluation report</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Evaluation report</h1>",
        f"<p>{int(metrics['n_prompts'])} held-out prompts x {config.samples_per_prompt} "
        f"samples per model (seed {config.seed}, temperature {config.temperature}, top_p "
        f"{config.top_p}, up to {config.max_new_tokens} new tokens).</p>",
        *_headline(metrics, results),
        *(_gate(gate) if gate is not None else []),
        "<h2>All metrics</h2>",
        _table(
            ["metric", "value"],
            [[f"<code>{_e(k)}</code>", _fmt(v)] for k, v in metrics.items()],
        ),
        "<h2>Training history</h2>",
        _history(history),
        "<h2>Score distributions</h2>",
        histograms(results),
        *_side_by_side(config, metrics, results, prompts, data_answers),
        "<h2>Settings</h2>",
        _settings(config, inputs, results),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _headline(metrics: dict[str, float], results: dict[str, ModelResult]) -> list[str]:
    """The comparisons of candidate and reference, then one row per model."""
    parts = ["<h2>Headline</h2>"]
    has_rm = "win_rate_rm" in metrics
    if not has_rm:
        parts.append(
            '<p class="note">No reward model was given (the DPO pipeline trains without one): '
            "the RM-judged metrics (<code>win_rate_rm</code>, <code>reward_mean</code>) are "
            "skipped.</p>"
        )
    head_rows = []
    if has_rm:
        head_rows.append(
            ["<code>win_rate_rm</code> — candidate beats reference, judged by the reward model"]
            + [_fmt(metrics["win_rate_rm"])]
        )
    if "win_rate_gold" in metrics:
        head_rows.append(
            ["<code>win_rate_gold</code> — the same, judged by the gold reward"]
            + [_fmt(metrics["win_rate_gold"])]
        )
    if "kl_candidate_reference" in metrics:
        head_rows.append(
            ["<code>kl_candidate_reference</code> — KL(candidate || reference) per response"]
            + [_fmt(metrics["kl_candidate_reference"])]
        )
    parts.append(_table(["comparison", "value"], head_rows))
    has_gold = results[CANDIDATE].gold_scores is not None
    has_ppl = any(f"{n}/perplexity" in metrics for n in results)
    has_elo = any(k.startswith("elo/") for k in metrics)
    columns = ["model"] + (["reward_mean"] if has_rm else []) + (["gold_mean"] if has_gold else [])
    columns += ["length_mean"]
    columns += (["perplexity"] if has_ppl else []) + (["elo"] if has_elo else [])
    model_rows = []
    for name, res in results.items():
        row = [f"<b>{_e(name)}</b><br><small>{_e(res.path)}</small>"]
        for col in columns[1:]:
            key = f"elo/{name}" if col == "elo" else f"{name}/{col}"
            row.append(_fmt(metrics.get(key)))
        model_rows.append(row)
    parts.append(_table(columns, model_rows))
    return parts


def _gate(gate: GateDecision) -> list[str]:
    win = "–" if gate.win_rate is None else _fmt(gate.win_rate)
    return [
        "<h2>Champion gate</h2>",
        f"<p><b>{_e(gate.alias)}</b>: {_e(gate.reason)}. Win rate over the champion "
        f"{win} on {gate.samples} paired samples judged by {_e(gate.judge)} (threshold "
        f"{_fmt(gate.threshold)}, at least {gate.min_samples} samples).</p>",
    ]


def _history(history: TrainingHistory) -> str:
    """The training history's plot, or a note saying there is nothing to plot."""
    plot = history_plot(history.entries) if history.entries else None
    if plot is not None:
        return plot
    return (
        f'<p class="note">The candidate folder has no {history.file} with '
        f"{', '.join(k for k, _ in HISTORY_PLOTS)}: nothing to plot.</p>"
    )


def _side_by_side(
    config: EvalConfig,
    metrics: dict[str, float],
    results: dict[str, ModelResult],
    prompts: list[Messages],
    data_answers: list[str | None],
) -> list[str]:
    """The first ``report_samples`` prompts with the first sample of candidate and reference
    and its scores (and the data's answer, when any shown prompt has one)."""
    cand, ref = results[CANDIDATE], results[REFERENCE]
    has_rm = "win_rate_rm" in metrics
    has_gold = cand.gold_scores is not None
    shown = min(config.report_samples, len(prompts))
    parts = ["<h2>Side-by-side samples</h2>"]
    parts.append(
        f'<p class="note">The first {shown} prompts; the first sample of each model'
        + (", with its RM score" if has_rm else "")
        + (
            " and gold reward"
            if has_gold and has_rm
            else ", with its gold reward"
            if has_gold
            else ""
        )
        + ".</p>"
    )
    s = config.samples_per_prompt
    with_answers = any(data_answers[p] for p in range(shown))
    sample_rows = []
    for p in range(shown):
        i = p * s
        row = [f"<pre>{_e(_prompt_text(prompts[p]))}</pre>"]
        for res in (cand, ref):
            judged = []
            if res.rm_scores is not None:
                judged.append(f"RM {_fmt(res.rm_scores[i])}")
            if res.gold_scores is not None:
                judged.append(f"gold {_fmt(res.gold_scores[i])}")
            score = " · ".join(judged)
            row.append(f"<pre>{_e(res.responses[i])}</pre><small>{score}</small>")
        if with_answers:
            row.append(f"<pre>{_e(data_answers[p] or '')}</pre>")
        sample_rows.append(row)
    header = ["prompt", CANDIDATE, REFERENCE] + (["answer in the data"] if with_answers else [])
    parts.append(_table(header, sample_rows, numeric_from=len(header)))
    return parts


def _settings(config: EvalConfig, inputs: EvalInputs, results: dict[str, ModelResult]) -> str:
    """The input locations, the other models' folders and every config field."""
    settings = {
        "candidate": inputs.candidate,
        "reference": inputs.reference,
        "reward_model": inputs.reward_model or "none",
        "eval_prompts": inputs.eval_prompts,
        "sft_data": inputs.sft_data,
        **{f"other: {n}": r.path for n, r in results.items() if n not in (CANDIDATE, REFERENCE)},
        **{f"config.{k}": v for k, v in to_dict(config).items()},
    }
    return _table(
        ["setting", "value"],
        [[f"<code>{_e(k)}</code>", _e(v)] for k, v in settings.items()],
        numeric_from=2,
    )
