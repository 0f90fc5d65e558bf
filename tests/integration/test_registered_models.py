"""Registered versions are MLflow models, against a real MLflow server (artifacts proxied to
the S3 server): the policy loads with ``mlflow.transformers`` and samples what the evaluation
samples, the reward model loads with ``mlflow.pyfunc`` and scores what ``RewardScorer``
scores (both heads), ``mlflow models serve`` answers ``/invocations`` for the champion, and
the registry's fetch hands our loaders the Hugging Face folder inside."""

from __future__ import annotations

import uuid

import mlflow
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient
from servers import serve_and_post

from rlhf import storage, tracking
from rlhf.config import EvalConfig
from rlhf.modeling import models
from rlhf.modeling.encoding import encode_prompt
from rlhf.modeling.generation import SamplingConfig, decode_responses, sample_responses
from rlhf.modeling.reward_scoring import RewardScorer
from rlhf.registry import CHAMPION, ModelRegistry
from rlhf.stages import champion_gate
from rlhf.stages.evaluation.registration import serving_settings

CONFIG = EvalConfig(max_new_tokens=8, temperature=0.7, top_p=0.9, batch_size=4)
PROMPTS = ["Create a shopping list from this recipe: fry onion and garlic in oil.", "Hi"]
RESPONSES = ["onion, garlic, oil", "Hello! How can I help?"]


@pytest.fixture(scope="module")
def registered(mlflow_server, micro_models, tmp_path_factory):
    """The micro SFT model and both reward models registered as champions through the gate's
    ``register_outcome``: {"policy", "reward" (log_ratio head), "reward_scalar"} -> name."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    mp.setenv("RLHF_CACHE_DIR", str(tmp_path_factory.mktemp("registry-cache")))
    name = f"policy-{uuid.uuid4().hex[:8]}"
    names = {"policy": name, "reward": f"{name}-rm", "reward_scalar": f"{name}-rm-scalar"}
    first = champion_gate.decide(None, 0, 0.5, 1, "gold")
    for head in ("reward", "reward_scalar"):  # an evaluation run registers one of each
        with tracking.stage_run("evaluate", pipeline_run=f"registered-{head}") as tracker:
            champion_gate.register_outcome(
                tracker.registry, first, names["policy"], names[head], micro_models["sft"],
                micro_models[head], tracker.run_id, {}, serving_settings(CONFIG),
            )  # fmt: skip
    yield names
    mp.undo()


def test_policy_loads_as_a_pipeline_and_samples_like_the_evaluation(registered, micro_models):
    pipeline = mlflow.transformers.load_model(f"models:/{registered['policy']}@champion")
    assert type(pipeline).__name__ == "TextGenerationPipeline"

    # Through pyfunc: chat messages in, the chat template applied, the evaluation's sampling
    # settings kept as the model config.
    served = mlflow.pyfunc.load_model(f"models:/{registered['policy']}@champion")
    assert served.model_config == {
        "max_new_tokens": 8, "do_sample": True, "temperature": 0.7, "top_p": 0.9, "top_k": 0,
    }  # fmt: skip
    messages = [{"role": "user", "content": PROMPTS[0]}]
    answer = served.predict({"messages": messages})[0]
    assert answer["choices"][0]["message"]["role"] == "assistant"
    assert 1 <= answer["usage"]["completion_tokens"] <= CONFIG.max_new_tokens

    # A request's own top_p overrides the saved one; a nucleus this narrow keeps only the most
    # likely token, so the answer is the one the evaluation's sampling code gives greedily on
    # the same prompt ids (the pipeline's batching draws from torch's RNG, so seeded samples
    # of the two cannot be compared).
    narrow = served.predict({"messages": messages, "top_p": 1e-9})[0]
    tokenizer = models.load_tokenizer(micro_models["sft"])
    model = models.load_causal_lm(micro_models["sft"])
    sampling = SamplingConfig(CONFIG.max_new_tokens, CONFIG.temperature, CONFIG.top_p)
    ids = encode_prompt(tokenizer, messages)
    greedy = sample_responses(model, tokenizer, [ids], sampling, greedy=True)
    assert (
        narrow["choices"][0]["message"]["content"].strip() == decode_responses(tokenizer, greedy)[0]
    )
    assert narrow["usage"]["prompt_tokens"] == len(ids)


@pytest.mark.parametrize("head", ["reward", "reward_scalar"])
def test_reward_model_pyfunc_scores_like_the_scorer(registered, micro_models, head):
    model = mlflow.pyfunc.load_model(f"models:/{registered[head]}@champion")
    scores = model.predict(pd.DataFrame({"prompt": PROMPTS, "response": RESPONSES}))
    expected = RewardScorer.load(micro_models[head]).score(PROMPTS, RESPONSES)
    assert len(scores) == 2
    assert torch.allclose(torch.tensor(scores, dtype=torch.float32), expected, atol=1e-5)
    assert scores[0] != scores[1]  # the rows are scored apart, not one score copied

    with pytest.raises(Exception, match="response"):
        model.predict(pd.DataFrame({"prompt": PROMPTS}))


def test_fetched_version_is_verified_and_our_loaders_read_it(registered, micro_models):
    client = MlflowClient(tracking.tracking_uri())
    registry = ModelRegistry(client, tracking.tracking_uri())
    version = registry.by_alias(registered["policy"], CHAMPION)
    folder = registry.fetch(version)
    model_dir = folder.parent
    listed = {e["path"] for e in storage.verify_folder(model_dir)["files"]}
    assert {"MLmodel", "requirements.txt", "model/model.safetensors"} <= listed
    requirements = (model_dir / "requirements.txt").read_text().split()
    assert "torch==2.13.0" in requirements and not any("torchvision" in r for r in requirements)
    # model/ is the evaluated folder byte for byte: its own manifest still verifies it.
    assert (
        storage.verify_folder(folder)["files"]
        == storage.verify_folder(micro_models["sft"])["files"]
    )
    fetched = models.load_causal_lm(str(folder)).state_dict()
    original = models.load_causal_lm(micro_models["sft"]).state_dict()
    assert all(torch.equal(fetched[k], original[k]) for k in original)
    assert models.load_tokenizer(str(folder)).chat_template
    tags = client.get_model_version(version.name, version.version).tags
    assert tags["rlhf.source"] == micro_models["sft"]

    # The reward model brings the rlhf code its pyfunc runs; its HF folder is the one scored.
    version = registry.by_alias(registered["reward"], CHAMPION)
    folder = registry.fetch(version)
    listed = {e["path"] for e in storage.verify_folder(folder.parents[1])["files"]}
    assert {"code/rlhf/modeling/reward_scoring.py", "reward_pyfunc.py"} <= listed
    assert (folder / "reference" / "config.json").is_file()  # the log_ratio head's reference
    assert RewardScorer.load(str(folder)).score(PROMPTS, RESPONSES).tolist() == (
        RewardScorer.load(micro_models["reward"]).score(PROMPTS, RESPONSES).tolist()
    )


def test_served_champion_answers_invocations(registered, mlflow_server, tmp_path):
    body = {"messages": [{"role": "user", "content": PROMPTS[0]}], "max_tokens": 4}
    answer = serve_and_post(
        f"models:/{registered['policy']}@champion", body, mlflow_server.url, tmp_path / "log"
    )
    # A chat model answers with a list of OpenAI-style chat completions, one per request row.
    assert isinstance(answer, list) and len(answer) == 1, answer
    choice = answer[0]["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str)
    assert 1 <= answer[0]["usage"]["completion_tokens"] <= 4


def test_served_reward_model_scores_in_a_fresh_process(
    registered, micro_models, mlflow_server, tmp_path
):
    rows = [list(pair) for pair in zip(PROMPTS, RESPONSES, strict=True)]
    body = {"dataframe_split": {"columns": ["prompt", "response"], "data": rows}}
    answer = serve_and_post(
        f"models:/{registered['reward_scalar']}@champion", body, mlflow_server.url, tmp_path / "log"
    )
    expected = RewardScorer.load(micro_models["reward_scalar"]).score(PROMPTS, RESPONSES)
    assert torch.allclose(torch.tensor(answer["predictions"]), expected, atol=1e-5)
