"""Stage 5: evaluation of a candidate policy against the reference (SFT) on held-out prompts.

For each model (candidate, reference, then any ``others``): sample ``samples_per_prompt``
responses per prompt (torch seeded with ``config.seed`` right before the model samples), decode
them, score them with the reward model (when there is one: the DPO pipeline has none, and then
every RM-judged metric is skipped) and, when configured, the programmatic gold reward.
Then: mean scores and lengths, win rates of candidate over reference (sample i against sample
i of the same prompt, ties 1/2), a sample-based KL(candidate || reference) on the candidate's
responses, perplexity on held-out SFT data, and Elo ratings when three or more models are
compared. The metrics go to the tracker, an optional JSON file and a self-contained HTML report.
docs/evaluation.md describes every metric and how to read them.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, set_seed

from rlhf import storage
from rlhf.algorithms.kl import kl_penalty, sequence_kl
from rlhf.algorithms.ranking import ELO_BASE, ELO_K, elo_ratings, round_robin_matches, win_rate
from rlhf.config import EvalConfig, to_dict
from rlhf.console.progress import Progress
from rlhf.data.artifacts import load_split
from rlhf.gold import load_reward_function
from rlhf.modeling import models
from rlhf.modeling.encoding import Messages, encode_conversation, encode_prompt
from rlhf.modeling.forward import heldout_nll, response_logprobs
from rlhf.modeling.generation import Rollout, SamplingConfig, decode_responses, sample_responses
from rlhf.modeling.reward_scoring import RewardScorer
from rlhf.registry import CHAMPION, ModelRegistry, Version
from rlhf.stages import champion_gate
from rlhf.stages.champion_gate import GateDecision
from rlhf.stages.on_policy import HISTORY_FILE
from rlhf.stages.publish import publish_copy
from rlhf.tracking import Tracker

log = logging.getLogger("rlhf.evaluate")

CANDIDATE = "candidate"
REFERENCE = "reference"
# The policy holding the registry alias "champion", sampled like the others for the gate.
CHAMPION_MODEL = CHAMPION
GATE_FILE = "gate.json"  # the gate's decision, beside the report when publishing
# Training-history keys plotted in the report, with their titles.
HISTORY_PLOTS = (
    ("reward/score_mean", "RM score (mean)"),
    ("kl/mean", "KL(policy || reference) per response"),
    ("gold/mean", "gold reward (mean)"),
)
ARTIFACT_PATH = "evaluation"  # where the report goes in the tracker's artifacts
_CPU = torch.device("cpu")


@dataclass
class EvalInputs:
    eval_prompts: str  # prepared eval_prompts artifact (its "test" split)
    candidate: str  # the policy to evaluate (e.g. the PPO model folder)
    reference: str  # the policy to compare with (the SFT model)
    reward_model: str | None  # the reward model that judges both; None skips RM metrics
    sft_data: str | None = None  # prepared sft artifact: perplexity on its validation split
    # Extra policy folders ranked by Elo alongside candidate and reference; each is named by
    # its folder's name (made unique, and never "candidate" or "reference").
    others: list[str] = field(default_factory=list)


@dataclass
class EvalOutputs:
    report: str  # HTML file (give it a folder of its own: the folder goes to the tracker)
    metrics: str | None = None  # JSON file of the flat metrics


@dataclass
class ModelResult:
    """One model's responses and their scores. Every list is prompt-major: entry
    ``p * samples_per_prompt + s`` is sample s for prompt p."""

    name: str
    path: str
    responses: list[str]
    lengths: list[int]  # response tokens, EOS included
    rm_scores: list[float] | None  # None without a reward model
    gold_scores: list[float] | None = None
    perplexity: float | None = None


def model_names(others: Sequence[str]) -> list[str]:
    """Names for the ``others`` folders: the folder name with characters outside
    ``[A-Za-z0-9_.-]`` replaced by ``_``; a clash (or an empty name) gets ``other<i>`` (1-based)."""
    used = {CANDIDATE, REFERENCE, CHAMPION_MODEL}
    names = []
    for i, path in enumerate(others, start=1):
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(str(path).rstrip("/")).name)
        if not name.strip("._") or name in used:
            name = f"other{i}"
            while name in used:
                name += "_"
        used.add(name)
        names.append(name)
    return names


def _check(config: EvalConfig) -> None:
    problems = []
    if config.samples_per_prompt < 1:
        problems.append("samples_per_prompt must be >= 1")
    if config.batch_size < 1:
        problems.append("batch_size must be >= 1")
    if config.max_new_tokens < 1:
        problems.append("max_new_tokens must be >= 1")
    if config.max_length <= config.max_new_tokens:
        problems.append("max_length must exceed max_new_tokens (prompt + response fit in it)")
    if not config.temperature > 0:
        problems.append("temperature must be > 0 (evaluation samples; it is never greedy)")
    if not 0 < config.top_p <= 1:
        problems.append("top_p must be in (0, 1]")
    if config.report_samples < 0:
        problems.append("report_samples must be >= 0")
    if not 0 <= config.gate_threshold <= 1:
        problems.append("gate_threshold must be in [0, 1] (a win rate)")
    if config.gate_min_samples < 0:
        problems.append("gate_min_samples must be >= 0")
    if problems:
        raise ValueError("evaluate config: " + "; ".join(problems))


# --- per-model work ------------------------------------------------------------------------


def sample_all(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[Messages],
    config: EvalConfig,
    progress: Progress | None = None,
) -> list[Rollout]:
    """``samples_per_prompt`` responses to every prompt, in prompt-major batches of
    ``batch_size``, kept on the CPU. Seeds torch (and Python, NumPy) with ``config.seed``
    first, so a model's samples depend only on the model, the prompts and the config.
    ``progress`` counts the responses."""
    budget = config.max_length - config.max_new_tokens
    encoded = [encode_prompt(tokenizer, m, config.chat_template)[-budget:] for m in prompts]
    flat = [ids for ids in encoded for _ in range(config.samples_per_prompt)]
    sampling = SamplingConfig(config.max_new_tokens, config.temperature, config.top_p)
    set_seed(config.seed)
    rollouts = []
    for i in range(0, len(flat), config.batch_size):
        batch = flat[i : i + config.batch_size]
        rollouts.append(sample_responses(model, tokenizer, batch, sampling).to(_CPU))
        if progress is not None:
            progress.update(len(batch))
    return rollouts


@torch.no_grad()
def rollout_logprobs(
    model: PreTrainedModel, rollouts: list[Rollout], temperature: float
) -> list[torch.Tensor]:
    """Per batch, (B, R) log-probs of the rollouts' response tokens under ``model`` at the
    sampling temperature (on the CPU, float32; padding not masked)."""
    device = next(model.parameters()).device
    out = []
    for r in rollouts:
        r = r.to(device)
        lp, _ = response_logprobs(
            model, r.input_ids, r.attention_mask, r.prompt_width, temperature=temperature
        )
        out.append(lp.float().to(_CPU))
    return out


def sample_kl(
    rollouts: list[Rollout], logprobs: list[torch.Tensor], ref_logprobs: list[torch.Tensor]
) -> float:
    """Mean over responses of sum over response tokens of log pi - log ref (the "k1"
    estimator): an unbiased estimate of KL(pi || ref) when the responses were sampled from pi."""
    per_response = [
        sequence_kl(kl_penalty(lp, ref, "k1"), r.response_mask.float())
        for r, lp, ref in zip(rollouts, logprobs, ref_logprobs, strict=True)
    ]
    return torch.cat(per_response).double().mean().item()


@torch.no_grad()
def perplexity(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[dict[str, Any]],
    config: EvalConfig,
) -> float | None:
    """exp(mean NLL per response token) of SFT conversations (the loss mask of
    ``encode_conversation``: assistant turns only); None when no row has a response token."""
    examples = [
        encode_conversation(tokenizer, r["messages"], config.max_length, config.chat_template)
        for r in rows
    ]
    loss = heldout_nll(model, examples, tokenizer.pad_token_id, config.batch_size)
    return None if math.isnan(loss) else math.exp(min(loss, 50.0))


def _same_vocab(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> bool:
    return a.get_vocab() == b.get_vocab() and a.eos_token_id == b.eos_token_id


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


# --- the stage -----------------------------------------------------------------------------


def run(
    config: EvalConfig, inputs: EvalInputs, outputs: EvalOutputs, tracker: Tracker | None = None
) -> dict[str, float]:
    tracker = tracker or Tracker()
    started = time.time()
    _check(config)
    device = models.pick_device(config.device)
    others = list(inputs.others or [])
    tracker.log_params({f"evaluate.{k}": v for k, v in to_dict(config).items()})
    tracker.log_params(
        {
            "evaluate.candidate_model": inputs.candidate,
            "evaluate.reference_model": inputs.reference,
            "evaluate.reward_model": inputs.reward_model or "none",
            "evaluate.eval_prompts": inputs.eval_prompts,
            "evaluate.others": ",".join(others) or "none",
        }
    )
    gold = load_reward_function(config.gold_reward) if config.gold_reward else None
    registry = tracker.registry if config.registered_policy else None
    if registry is None:
        log.info("evaluate: no model registry (not tracking to MLflow, or no registered_policy)")
    else:  # fail before sampling when the gate would have no judge
        judge = champion_gate.judge_for(
            config.gate_judge, gold is not None, bool(inputs.reward_model)
        )
    champion = registry.by_alias(config.registered_policy, CHAMPION) if registry else None

    rows = load_split(inputs.eval_prompts, "test")
    n_prompts = len(rows) if config.max_prompts <= 0 else min(len(rows), config.max_prompts)
    if n_prompts == 0:
        raise ValueError(f"{inputs.eval_prompts}: the test split has no prompts to evaluate on")
    rows = rows.select(range(n_prompts))
    prompts: list[Messages] = [r["prompt"] for r in rows]
    data_answers: list[str | None] = [r.get("reference") for r in rows]
    flat_prompts = [p for p in prompts for _ in range(config.samples_per_prompt)]
    sft_rows = load_split(inputs.sft_data, "validation") if inputs.sft_data else None
    scorer = (
        RewardScorer.load(inputs.reward_model, config.device, config.dtype)
        if inputs.reward_model
        else None
    )
    if scorer is None:
        log.info("evaluate: no reward model given; reporting gold-judged metrics, KL and length")

    names = [CANDIDATE, REFERENCE, *model_names(others)]
    paths = [inputs.candidate, inputs.reference, *others]
    if registry is not None and champion is not None:
        log.info("evaluate: the champion is %s version %s", champion.name, champion.version)
        names.insert(2, CHAMPION_MODEL)
        paths.insert(2, str(registry.fetch(champion)))
    results: dict[str, ModelResult] = {}
    kl: float | None = None
    cand_tokenizer: PreTrainedTokenizerBase | None = None
    cand_rollouts: list[Rollout] = []
    cand_logprobs: list[torch.Tensor] = []
    progress = Progress("evaluate sampling", len(names) * len(flat_prompts), "response")
    for name, path in zip(names, paths, strict=True):
        log.debug("evaluate: sampling %d responses from %s (%s)", len(flat_prompts), name, path)
        tokenizer = models.load_tokenizer(path, config.trust_remote_code)
        model = models.load_causal_lm(path, config.dtype, config.trust_remote_code)
        model.to(device).eval()
        rollouts = sample_all(model, tokenizer, prompts, config, progress)
        if name == CANDIDATE:
            cand_tokenizer, cand_rollouts = tokenizer, rollouts
            cand_logprobs = rollout_logprobs(model, rollouts, config.temperature)
        elif name == REFERENCE:
            assert cand_tokenizer is not None
            if _same_vocab(cand_tokenizer, tokenizer):
                ref_logprobs = rollout_logprobs(model, cand_rollouts, config.temperature)
                kl = sample_kl(cand_rollouts, cand_logprobs, ref_logprobs)
            else:
                log.warning("evaluate: candidate and reference tokenizers differ; no KL reported")
        ppl = perplexity(model, tokenizer, sft_rows, config) if sft_rows is not None else None
        del model
        texts = [t for r in rollouts for t in decode_responses(tokenizer, r)]
        lengths = [int(n) for r in rollouts for n in r.response_mask.sum(-1).tolist()]
        rm = scorer.score(flat_prompts, texts, config.batch_size).tolist() if scorer else None
        golds = (
            [float(gold(p, t)) for p, t in zip(flat_prompts, texts, strict=True)] if gold else None
        )
        results[name] = ModelResult(name, path, texts, lengths, rm, golds, ppl)
    progress.close()

    metrics = compute_metrics(results, n_prompts, config.samples_per_prompt, kl)
    gate = None
    if registry is not None:
        gate = gate_decision(results, judge, config)
        metrics.update(gate.metrics())
    history = read_training_history(inputs.candidate)
    report = render_report(config, inputs, metrics, results, prompts, data_answers, history, gate)
    storage.atomic_write_text(outputs.report, report)
    if outputs.metrics:
        storage.atomic_write_text(outputs.metrics, json.dumps(metrics, indent=2, sort_keys=True))
    tracker.log_metrics(metrics)
    _log_report(tracker, outputs)
    if registry is not None and gate is not None:
        _register(registry, gate, config, inputs, metrics, tracker, champion)
    if config.publish_to:
        _publish(config.publish_to, outputs, metrics, gate, tracker)
    log.debug(
        "evaluate: win rate (RM) %s%s, KL %s, in %.0fs",
        f"{metrics['win_rate_rm']:.3f}" if "win_rate_rm" in metrics else "n/a (no reward model)",
        f", win rate (gold) {metrics['win_rate_gold']:.3f}" if "win_rate_gold" in metrics else "",
        f"{kl:.3f}" if kl is not None else "n/a",
        time.time() - started,
    )
    return metrics


def gate_decision(results: dict[str, ModelResult], judge: str, config: EvalConfig) -> GateDecision:
    """The gate's decision from the candidate's and the champion's judged samples (paired by
    prompt and sample index, like ``win_rate_rm``); no champion sampled: the first model."""
    cand = results[CANDIDATE]
    champ = results.get(CHAMPION_MODEL)
    win = None
    if champ is not None:
        win = win_rate(
            champion_gate.judged(cand.rm_scores, cand.gold_scores, judge),
            champion_gate.judged(champ.rm_scores, champ.gold_scores, judge),
        )
    decision = champion_gate.decide(
        win, len(cand.responses), config.gate_threshold, config.gate_min_samples, judge
    )
    log.info("evaluate: champion gate -> %s (%s)", decision.alias, decision.reason)
    return decision


def data_checksums(inputs: EvalInputs) -> dict[str, str]:
    """``rlhf.data_sha256.<role>`` tags: the prepared data each model saw (from its manifest)
    and the evaluation prompts."""
    from rlhf.data.artifacts import manifest_checksum

    tags = {"rlhf.data_sha256.eval_prompts": manifest_checksum(inputs.eval_prompts)}
    roles = (("policy", inputs.candidate), ("reference", inputs.reference))
    for role, uri in (*roles, ("reward_model", inputs.reward_model)):
        if not uri:
            continue
        try:
            checksum = storage.read_manifest(storage.local_path(uri)).get("data_sha256")
        except (FileNotFoundError, storage.StorageError):  # a hub id or a foreign folder
            checksum = None
        if checksum:
            tags[f"rlhf.data_sha256.{role}"] = str(checksum)
    return tags


def _register(
    registry: ModelRegistry,
    gate: GateDecision,
    config: EvalConfig,
    inputs: EvalInputs,
    metrics: dict[str, float],
    tracker: Tracker,
    champion: Version | None,
) -> None:
    assert tracker.run_id is not None  # a registry comes with a tracked run
    tags: dict[str, Any] = {
        "rlhf.pipeline_run": tracker.pipeline_run or "",
        "rlhf.evaluation_run": tracker.run_id,
        "rlhf.gate.previous_champion": champion.version if champion else "",
        **data_checksums(inputs),
        **{f"eval.{k}": f"{v:.6g}" for k, v in metrics.items()},
    }
    versions = champion_gate.register_outcome(
        registry,
        gate,
        config.registered_policy,
        config.registered_reward_model if inputs.reward_model else "",
        inputs.candidate,
        inputs.reward_model,
        tracker.run_id,
        tags,
    )
    tracker.set_tags(
        {
            "rlhf.gate.alias": gate.alias,
            "rlhf.gate.reason": gate.reason,
            **{f"rlhf.registered.{role}": f"{v.name}/{v.version}" for role, v in versions.items()},
        }
    )


def _publish(
    destination: str,
    outputs: EvalOutputs,
    metrics: dict[str, float],
    gate: GateDecision | None,
    tracker: Tracker,
) -> None:
    """Publish the report, the metrics and the gate's decision as one folder."""
    with tempfile.TemporaryDirectory(prefix="rlhf-eval-publish-") as tmp:
        folder = Path(tmp) / "evaluation"
        with storage.atomic_dir(folder) as out:
            shutil.copy2(outputs.report, out / "report.html")
            (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
            if gate is not None:
                (out / GATE_FILE).write_text(json.dumps(gate.as_dict(), indent=2, sort_keys=True))
            storage.write_manifest(out, {"artifact": "evaluation"})
        publish_copy(folder, destination, tracker, "evaluation")


def compute_metrics(
    results: dict[str, ModelResult], n_prompts: int, samples_per_prompt: int, kl: float | None
) -> dict[str, float]:
    """The flat metrics from every model's scores (``results`` holds candidate and reference
    first, then the others, in the order Elo plays them). Without a reward model the RM-judged
    metrics are left out; without RM and gold scores there are no win rates or Elo ratings."""
    cand, ref = results[CANDIDATE], results[REFERENCE]
    has_gold = cand.gold_scores is not None
    metrics: dict[str, float] = {
        "n_prompts": float(n_prompts),
        "n_samples": float(n_prompts * samples_per_prompt),
    }
    for name, res in results.items():
        if res.rm_scores is not None:
            metrics[f"{name}/reward_mean"] = _mean(res.rm_scores)
        if res.gold_scores is not None:
            metrics[f"{name}/gold_mean"] = _mean(res.gold_scores)
        metrics[f"{name}/length_mean"] = _mean(res.lengths)
        if res.perplexity is not None:
            metrics[f"{name}/perplexity"] = res.perplexity
    if cand.rm_scores is not None and ref.rm_scores is not None:
        metrics["win_rate_rm"] = win_rate(cand.rm_scores, ref.rm_scores)
    if has_gold:
        assert cand.gold_scores is not None and ref.gold_scores is not None
        metrics["win_rate_gold"] = win_rate(cand.gold_scores, ref.gold_scores)
    if kl is not None:
        metrics["kl_candidate_reference"] = kl
    judged = {
        name: res.gold_scores if res.gold_scores is not None else res.rm_scores
        for name, res in results.items()
    }
    if len(results) >= 3 and all(v is not None for v in judged.values()):
        for name, rating in elo_ratings(round_robin_matches(judged), ELO_K, ELO_BASE).items():
            metrics[f"elo/{name}"] = rating
    return metrics


def read_training_history(model_uri: str) -> list[dict[str, Any]]:
    """The candidate's ``training_history.json`` (a list of {"step", metric: value} dicts);
    empty when the folder has none (an SFT model, a hub id) or it cannot be read."""
    try:
        path = Path(models.resolve(model_uri)) / HISTORY_FILE
        if not path.is_file():
            return []
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        log.warning("evaluate: cannot read the training history of %s: %s", model_uri, err)
        return []
    return (
        [h for h in data if isinstance(h, dict) and "step" in h] if isinstance(data, list) else []
    )


def _log_report(tracker: Tracker, outputs: EvalOutputs) -> None:
    """Log the report's folder when it holds only this stage's outputs; otherwise a temporary
    folder with copies of them (never upload unrelated files that share the folder)."""
    report = Path(outputs.report)
    files = [report] + ([Path(outputs.metrics)] if outputs.metrics else [])
    folder = report.parent
    if {p.resolve() for p in folder.iterdir()} <= {f.resolve() for f in files}:
        tracker.log_artifacts(folder, ARTIFACT_PATH)
        return
    with tempfile.TemporaryDirectory(prefix="rlhf-eval-") as tmp:
        for f in files:
            shutil.copy2(f, Path(tmp) / f.name)
        tracker.log_artifacts(tmp, ARTIFACT_PATH)


# --- the HTML report -----------------------------------------------------------------------

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


def _png(draw: Callable[[Any], None], alt: str, size: tuple[float, float]) -> str:
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
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _history_plot(history: list[dict[str, Any]]) -> str | None:
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

    return _png(draw, "reward, KL and gold reward over RL iterations", (4.2 * len(keys), 3.2))


def _histograms(results: dict[str, ModelResult]) -> str:
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
    return _png(draw, "score distributions, candidate vs reference", (4.8 * len(panels), 3.2))


def render_report(
    config: EvalConfig,
    inputs: EvalInputs,
    metrics: dict[str, float],
    results: dict[str, ModelResult],
    prompts: list[Messages],
    data_answers: list[str | None],
    history: list[dict[str, Any]],
    gate: GateDecision | None = None,
) -> str:
    """One self-contained HTML page (inline CSS and PNGs; every text escaped)."""
    cand, ref = results[CANDIDATE], results[REFERENCE]
    has_gold = cand.gold_scores is not None
    has_ppl = any(f"{n}/perplexity" in metrics for n in results)
    has_elo = any(k.startswith("elo/") for k in metrics)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>rlhf evaluation report</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Evaluation report</h1>",
        f"<p>{int(metrics['n_prompts'])} held-out prompts x {config.samples_per_prompt} "
        f"samples per model (seed {config.seed}, temperature {config.temperature}, top_p "
        f"{config.top_p}, up to {config.max_new_tokens} new tokens).</p>",
    ]

    # Headline: comparisons, then one row per model.
    parts.append("<h2>Headline</h2>")
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

    if gate is not None:
        parts.append("<h2>Champion gate</h2>")
        win = "–" if gate.win_rate is None else _fmt(gate.win_rate)
        parts.append(
            f"<p><b>{_e(gate.alias)}</b>: {_e(gate.reason)}. Win rate over the champion "
            f"{win} on {gate.samples} paired samples judged by {_e(gate.judge)} (threshold "
            f"{_fmt(gate.threshold)}, at least {gate.min_samples} samples).</p>"
        )

    parts.append("<h2>All metrics</h2>")
    parts.append(
        _table(
            ["metric", "value"],
            [[f"<code>{_e(k)}</code>", _fmt(v)] for k, v in metrics.items()],
        )
    )

    parts.append("<h2>Training history</h2>")
    plot = _history_plot(history) if history else None
    if plot is None:
        parts.append(
            f'<p class="note">The candidate folder has no {HISTORY_FILE} with '
            f"{', '.join(k for k, _ in HISTORY_PLOTS)}: nothing to plot.</p>"
        )
    else:
        parts.append(plot)

    parts.append("<h2>Score distributions</h2>")
    parts.append(_histograms(results))

    shown = min(config.report_samples, len(prompts))
    parts.append("<h2>Side-by-side samples</h2>")
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

    parts.append("<h2>Settings</h2>")
    settings = {
        "candidate": inputs.candidate,
        "reference": inputs.reference,
        "reward_model": inputs.reward_model or "none",
        "eval_prompts": inputs.eval_prompts,
        "sft_data": inputs.sft_data,
        **{f"other: {n}": r.path for n, r in results.items() if n not in (CANDIDATE, REFERENCE)},
        **{f"config.{k}": v for k, v in to_dict(config).items()},
    }
    parts.append(
        _table(
            ["setting", "value"],
            [[f"<code>{_e(k)}</code>", _e(v)] for k, v in settings.items()],
            numeric_from=2,
        )
    )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
