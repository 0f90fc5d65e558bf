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

import logging
import time

from rlhf.config import EvalConfig, to_dict
from rlhf.data.artifacts import load_split
from rlhf.gold import load_reward_function
from rlhf.modeling import models
from rlhf.modeling.reward_scoring import RewardScorer
from rlhf.registry import CHAMPION
from rlhf.stages import champion_gate
from rlhf.stages.evaluation import publishing, registration
from rlhf.stages.evaluation.compared import compared_models, model_names
from rlhf.stages.evaluation.history import read_training_history
from rlhf.stages.evaluation.metrics import compute_metrics
from rlhf.stages.evaluation.prompts import load_eval_prompts
from rlhf.stages.evaluation.report import render_report
from rlhf.stages.evaluation.sampling import sample_models
from rlhf.stages.evaluation.scoring import score_samples
from rlhf.stages.on_policy import HISTORY_FILE
from rlhf.stages.specs import EvalInputs, EvalOutputs
from rlhf.tracking import Tracker

# What cli.py, pipeline/adapters.py and tests import from here (HISTORY_FILE: on_policy).
__all__ = ["EvalInputs", "EvalOutputs", "HISTORY_FILE", "model_names", "run"]

log = logging.getLogger("rlhf.evaluate")


def _log_params(tracker: Tracker, config: EvalConfig, inputs: EvalInputs) -> None:
    tracker.log_params({f"evaluate.{k}": v for k, v in to_dict(config).items()})
    tracker.log_params(
        {
            "evaluate.candidate_model": inputs.candidate,
            "evaluate.reference_model": inputs.reference,
            "evaluate.reward_model": inputs.reward_model or "none",
            "evaluate.eval_prompts": inputs.eval_prompts,
            "evaluate.others": ",".join(inputs.others or []) or "none",
        }
    )


def run(
    config: EvalConfig, inputs: EvalInputs, outputs: EvalOutputs, tracker: Tracker | None = None
) -> dict[str, float]:
    # Setup: every input is checked and loaded (or fails) before the first model samples.
    tracker = tracker or Tracker()
    started = time.time()
    device = models.pick_device(config.device)
    _log_params(tracker, config, inputs)
    gold = load_reward_function(config.gold_reward) if config.gold_reward else None
    registry = tracker.registry if config.registered_policy else None
    if registry is None:
        log.info("evaluate: no model registry (not tracking to MLflow, or no registered_policy)")
    else:  # fail before sampling when the gate would have no judge or could not register
        judge = champion_gate.judge_for(
            config.gate_judge, gold is not None, bool(inputs.reward_model)
        )
        registration.check_registrable(config, inputs)
    champion = registry.by_alias(config.registered_policy, CHAMPION) if registry else None
    prompts, data_answers = load_eval_prompts(inputs.eval_prompts, config.max_prompts)
    flat_prompts = [p for p in prompts for _ in range(config.samples_per_prompt)]
    sft_rows = load_split(inputs.sft_data, "validation") if inputs.sft_data else None
    scorer = (
        RewardScorer.load(inputs.reward_model, config.device, config.dtype)
        if inputs.reward_model
        else None
    )
    if scorer is None:
        log.info("evaluate: no reward model given; reporting gold-judged metrics, KL and length")
    champion_path = None
    if registry is not None and champion is not None:
        log.info("evaluate: the champion is %s version %s", champion.name, champion.version)
        champion_path = str(registry.fetch(champion))
    paths = compared_models(inputs, champion_path)

    # Sample every model, score the samples, and the metrics from the scores.
    samples, kl = sample_models(paths, prompts, config, device, sft_rows)
    results = score_samples(samples, paths, flat_prompts, scorer, gold, config.batch_size)
    metrics = compute_metrics(results, len(prompts), config.samples_per_prompt, kl)
    gate = None
    if registry is not None:
        gate = registration.gate_decision(results, judge, config)
        metrics.update(gate.metrics())

    # The report, then where the results go: files, tracker, registry, publish_to.
    history = read_training_history(inputs.candidate, HISTORY_FILE)
    report = render_report(config, inputs, metrics, results, prompts, data_answers, history, gate)
    publishing.write_outputs(outputs, report, metrics)
    tracker.log_metrics(metrics)
    publishing.log_report(tracker, outputs)
    if registry is not None and gate is not None:
        registration.register(registry, gate, config, inputs, metrics, tracker, champion)
    if config.publish_to:
        publishing.publish(config.publish_to, outputs, metrics, gate, tracker)
    log.debug(
        "evaluate: win rate (RM) %s%s, KL %s, in %.0fs",
        f"{metrics['win_rate_rm']:.3f}" if "win_rate_rm" in metrics else "n/a (no reward model)",
        f", win rate (gold) {metrics['win_rate_gold']:.3f}" if "win_rate_gold" in metrics else "",
        f"{kl:.3f}" if kl is not None else "n/a",
        time.time() - started,
    )
    return metrics
