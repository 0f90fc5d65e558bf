"""Evaluation stage on hand-built cases: a policy against itself (no KL, all ties), a trained
policy against an untrained one (Elo, determinism), and the HTML report."""

import json
import shutil

import pytest
import torch

from rlhf import storage
from rlhf.config import EvalConfig
from rlhf.modeling import models
from rlhf.stages import evaluate
from rlhf.tracking import Tracker

GOLD = "rlhf.data.demo_task:gold_reward"
CONFIG = EvalConfig(
    max_prompts=6,
    samples_per_prompt=2,
    batch_size=8,
    max_new_tokens=12,
    gold_reward=GOLD,
    device="cpu",
    report_samples=3,
)
HISTORY = [
    {"step": 1, "reward/score_mean": 0.1, "kl/mean": 0.0, "gold/mean": -1.0},
    {"step": 2, "reward/score_mean": 0.4, "kl/mean": 0.3, "gold/mean": -0.8},
]


@pytest.fixture(scope="module")
def trained(prepared, micro_models, tmp_path_factory):
    """{"sft": tiny SFT model, "ppo": a copy of it with a training history, "untrained": the
    same architecture and tokenizer with random weights, "rm": a reward model}."""
    root = tmp_path_factory.mktemp("eval-models")
    shutil.copytree(micro_models["sft"], root / "sft")
    shutil.copytree(micro_models["reward"], root / "rm")
    shutil.copytree(root / "sft", root / "ppo")
    (root / "ppo" / evaluate.HISTORY_FILE).write_text(json.dumps(HISTORY))
    tokenizer = models.load_tokenizer(str(root / "sft"))
    torch.manual_seed(1)
    models.save_pretrained(
        models.build_from_preset("preset:micro-llama", tokenizer, 256),
        tokenizer,
        root / "untrained",
    )
    return {name: str(root / name) for name in ("sft", "ppo", "untrained", "rm")}


def _run(prepared, trained, out, candidate, reference, **kw):
    tracker = Tracker()
    config = kw.pop("config", CONFIG)
    inputs = evaluate.EvalInputs(
        kw.pop("eval_prompts", prepared["eval_prompts"]),
        candidate,
        reference,
        kw.pop("reward_model", trained["rm"]),
        **kw,
    )
    outputs = evaluate.EvalOutputs(str(out / "report.html"), str(out / "metrics.json"))
    return evaluate.run(config, inputs, outputs, tracker), tracker


def test_policy_against_itself(prepared, trained, tmp_path):
    """Same folder, same seed: identical samples, so zero KL and nothing but ties."""
    metrics, tracker = _run(
        prepared, trained, tmp_path, trained["sft"], trained["sft"], sft_data=prepared["sft"]
    )
    assert abs(metrics["kl_candidate_reference"]) < 1e-4
    assert metrics["win_rate_rm"] == 0.5
    assert metrics["win_rate_gold"] == 0.5
    assert metrics["candidate/reward_mean"] == metrics["reference/reward_mean"]
    assert metrics["candidate/gold_mean"] == metrics["reference/gold_mean"]
    assert metrics["candidate/length_mean"] == metrics["reference/length_mean"]
    assert 1 <= metrics["candidate/length_mean"] <= CONFIG.max_new_tokens
    assert metrics["candidate/perplexity"] == metrics["reference/perplexity"] > 1.0
    assert metrics["n_prompts"] == 6 and metrics["n_samples"] == 12
    assert not any(k.startswith("elo/") for k in metrics)  # two models: no Elo
    # what the tracker and the JSON file received
    assert tracker.metrics[-1][1] == metrics
    assert tracker.params["evaluate.samples_per_prompt"] == 2
    assert tracker.artifacts == [(str(tmp_path), "evaluation")]
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics


def test_three_models_elo_and_determinism(prepared, trained, tmp_path):
    """A trained policy, an untrained one and a copy of the first: Elo for all three, a clear
    KL, and the same metrics from a second run."""
    kw = dict(others=[trained["sft"]], sft_data=prepared["sft"])
    first, _ = _run(prepared, trained, tmp_path / "a", trained["ppo"], trained["untrained"], **kw)
    second, _ = _run(prepared, trained, tmp_path / "b", trained["ppo"], trained["untrained"], **kw)
    assert first == second
    assert set(k for k in first if k.startswith("elo/")) == {
        "elo/candidate",
        "elo/reference",
        "elo/sft",
    }
    assert sum(first[k] for k in first if k.startswith("elo/")) == pytest.approx(3000.0)
    # the copy samples exactly what the candidate samples
    assert first["sft/reward_mean"] == first["candidate/reward_mean"]
    assert first["kl_candidate_reference"] > 0.1  # trained vs random weights
    assert first["candidate/perplexity"] < first["reference/perplexity"]
    assert 0.0 <= first["win_rate_rm"] <= 1.0 and 0.0 <= first["win_rate_gold"] <= 1.0


def test_report(prepared, trained, tmp_path):
    """The report is one HTML page with the metrics, the PPO history plot, and escaped text;
    without gold and SFT data, their metrics are absent."""
    prompts = tmp_path / "eval_prompts"
    hostile = "Create a shopping list from this recipe: <script>alert(1)</script> Fry the onion."
    _write_eval_prompts(prompts, [hostile, "Create a shopping list from this recipe: Boil rice."])
    out = tmp_path / "report"
    out.mkdir()
    (out / "unrelated.bin").write_bytes(b"not ours")  # never uploaded with the report
    config = EvalConfig(max_prompts=0, samples_per_prompt=2, max_new_tokens=8, device="cpu")
    metrics, tracker = _run(
        prepared,
        trained,
        out,
        trained["ppo"],
        trained["sft"],
        eval_prompts=str(prompts),
        config=config,
    )
    assert metrics["n_prompts"] == 2
    assert "win_rate_gold" not in metrics and "candidate/gold_mean" not in metrics
    assert "candidate/perplexity" not in metrics
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    for name in metrics:
        assert name in page
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("data:image/png;base64,") == 2  # PPO history + score histograms
    for heading in ("Headline", "Training history", "Score distributions", "Side-by-side"):
        assert f"<h2>{heading}" in page
    ((folder, path),) = tracker.artifacts
    assert path == "evaluation" and folder != str(out)  # a copy, not the shared folder

    # without a training history the section says so instead of plotting
    _run(
        prepared,
        trained,
        out,
        trained["sft"],
        trained["sft"],
        eval_prompts=str(prompts),
        config=config,
    )
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 1
    assert "nothing to plot" in page


def test_without_a_reward_model_the_rm_metrics_are_skipped(prepared, trained, tmp_path):
    """The DPO pipeline has no reward model: gold, KL, length and Elo remain, RM ones go."""
    kw = dict(others=[trained["sft"]], reward_model=None)
    metrics, _ = _run(prepared, trained, tmp_path, trained["ppo"], trained["untrained"], **kw)
    with_rm, _ = _run(
        prepared,
        trained,
        tmp_path / "rm",
        trained["ppo"],
        trained["untrained"],
        others=kw["others"],
    )
    assert not any("reward_mean" in k or k == "win_rate_rm" for k in metrics)
    # everything else is what a run with the reward model reports
    assert metrics == {k: v for k, v in with_rm.items() if k in metrics}
    assert {"win_rate_gold", "kl_candidate_reference", "elo/sft"} <= set(metrics)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "No reward model was given" in page and "RM " not in page
    assert page.count("data:image/png;base64,") == 2  # history + the gold histogram


def test_names_and_config_checks():
    assert evaluate.model_names(["/x/ppo-v2/", "s3://b/ppo-v2", "/y/candidate", "/z/a b"]) == [
        "ppo-v2",
        "other2",
        "other3",
        "a_b",
    ]
    with pytest.raises(ValueError, match="temperature"):
        EvalConfig(temperature=0.0)
    with pytest.raises(ValueError, match="max_length"):
        EvalConfig(max_length=32, max_new_tokens=32)


def _write_eval_prompts(folder, prompts):
    """A minimal eval_prompts artifact (the schema prepare writes, plus a manifest)."""
    import datasets

    from rlhf.data.formats import SCHEMAS

    rows = {
        "prompt": [[{"role": "user", "content": p}] for p in prompts],
        "reference": [None] * len(prompts),
    }
    data = datasets.DatasetDict(
        {"test": datasets.Dataset.from_dict(rows, features=SCHEMAS["eval_prompts"])}
    )
    with storage.atomic_dir(folder) as tmp:
        data.save_to_disk(str(tmp))
        storage.write_manifest(tmp, {"artifact": "eval_prompts"})


@pytest.mark.parametrize("role", ["candidate", "reward_model"])
def test_an_adapter_is_refused_before_any_model_samples(
    prepared, trained, tmp_path, monkeypatch, role
):
    """Registration takes whole models only; a LoRA adapter folder (lora.publish: adapter) is
    refused before the evaluation's sampling, not after it, naming the setting."""
    from peft import LoraConfig, get_peft_model

    from rlhf import tracking

    adapter = tmp_path / "adapter"
    source = trained["sft"] if role == "candidate" else trained["rm"]
    load = models.load_causal_lm if role == "candidate" else models.load_reward_model
    get_peft_model(load(source), LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(
        adapter
    )
    assert (adapter / "adapter_config.json").is_file() and not (adapter / "config.json").exists()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")

    def sampled(*args, **kwargs):
        raise AssertionError("sampled before refusing the adapter")

    monkeypatch.setattr(evaluate, "sample_models", sampled)
    inputs = evaluate.EvalInputs(
        prepared["eval_prompts"],
        str(adapter) if role == "candidate" else trained["sft"],
        trained["sft"],
        str(adapter) if role == "reward_model" else trained["rm"],
    )
    outputs = evaluate.EvalOutputs(str(tmp_path / "report.html"), str(tmp_path / "m.json"))
    what, setting = {
        "candidate": ("policy", "registered_policy"),
        "reward_model": ("reward model", "registered_reward_model"),
    }[role]
    with tracking.stage_run("evaluate") as tracker, pytest.raises(ValueError) as refused:
        evaluate.run(CONFIG, inputs, outputs, tracker)
    message = str(refused.value)
    assert f"{adapter}: the {what} is a LoRA adapter (lora.publish: adapter)" in message
    assert "lora.publish: merged" in message and f"{setting}: ''" in message
    assert not (tmp_path / "report.html").exists()
