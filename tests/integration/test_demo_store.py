"""The champion after ``make demo``, without a server: ``rlhf run`` tracks to
``sqlite:///mlflow.db`` in the working directory (its tasks get the absolute path,
``tracking.absolute_tracking_uri``), and its evaluation registers the policy through the gate.
Here a micro policy and reward model are registered by that same code
(``registration.register``) in a task-like subprocess into a sqlite store in a directory of
their own; then, in that directory, what docs/serving.md tells a user to type works: the policy
loads with ``mlflow.transformers.load_model("models:/rlhf-policy@champion")`` and predicts, and
``mlflow models serve -m models:/rlhf-policy@champion --env-manager local`` answers a real
``POST /invocations`` on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from servers import serve_and_post

SRC = str(Path(__file__).resolve().parents[2] / "src")
PROMPT = "Create a shopping list from this recipe: fry onion and garlic in oil."

# The evaluation task's registration, as a kfp.local task runs it: a subprocess of its own with
# the tracking URI rlhf run gave it.
REGISTER = """
import sys
from rlhf import tracking
from rlhf.config import EvalConfig
from rlhf.stages import champion_gate
from rlhf.stages.evaluation import registration
from rlhf.stages.specs import EvalInputs

eval_prompts, candidate, reward_model = sys.argv[1:4]
config = EvalConfig(max_new_tokens=8, temperature=0.7, top_p=0.9, batch_size=4)
inputs = EvalInputs(eval_prompts, candidate, candidate, reward_model)
with tracking.stage_run("evaluate", pipeline_run="local-demo") as tracker:
    gate = champion_gate.decide(None, 0, config.gate_threshold, 1, "gold")
    registration.register(tracker.registry, gate, config, inputs, {"win_rate_gold": 0.6},
                          tracker, None)
"""

# What a user types in Python after make demo, in the same directory, in a new shell.
LOAD = """
import json, sys
import mlflow
import pandas as pd
policy = mlflow.transformers.load_model("models:/rlhf-policy@champion")
reply = policy([{"role": "user", "content": sys.argv[1]}], max_new_tokens=4)
reward = mlflow.pyfunc.load_model("models:/rlhf-reward-model@champion")
scores = reward.predict(pd.DataFrame({"prompt": [sys.argv[1]], "response": ["onion, oil"]}))
print(json.dumps({"pipeline": type(policy).__name__, "reply": reply, "scores": list(scores),
                  "tracking_uri": mlflow.get_tracking_uri()}, default=str))
"""


def _python(code: str, args: list[str], cwd: Path, env: dict) -> str:
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _env(tracking_uri: str | None, tmp: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, *sys.path]),
           "RLHF_CACHE_DIR": str(tmp / "cache")}  # fmt: skip
    env.pop("MLFLOW_TRACKING_URI", None)
    if tracking_uri is not None:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    return env


@pytest.fixture(scope="module")
def demo_dir(prepared, micro_models, tmp_path_factory):
    """A directory where 'make demo' ran: mlflow.db and the run's artifacts, the micro models
    registered as rlhf-policy and rlhf-reward-model @champion."""
    root = tmp_path_factory.mktemp("demo-checkout")
    # rlhf run's tasks get the store's absolute path (tracking.absolute_tracking_uri).
    uri = f"sqlite:///{root / 'mlflow.db'}"
    args = [prepared["eval_prompts"], micro_models["sft"], micro_models["reward_scalar"]]
    _python(REGISTER, args, root, _env(uri, root))
    assert (root / "mlflow.db").is_file()
    assert (root / "mlruns").is_dir()  # the artifacts beside it, as make clean expects them
    return root


def test_the_champion_loads_from_the_demo_store(demo_dir):
    """In the demo's directory with MLFLOW_TRACKING_URI unset: MLflow's default is that same
    sqlite file (the served test below exports it, as docs/serving.md says)."""
    out = json.loads(_python(LOAD, [PROMPT], demo_dir, _env(None, demo_dir)).splitlines()[-1])
    assert out["tracking_uri"] == f"sqlite:///{demo_dir / 'mlflow.db'}"
    assert out["pipeline"] == "TextGenerationPipeline"
    (generated,) = out["reply"]
    answer = generated["generated_text"][-1]
    assert answer["role"] == "assistant" and isinstance(answer["content"], str)
    assert len(out["scores"]) == 1 and isinstance(out["scores"][0], float)


def test_the_champion_serves_from_the_demo_store(demo_dir):
    body = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 4}
    answer = serve_and_post(
        "models:/rlhf-policy@champion", body, "sqlite:///mlflow.db", demo_dir / "serve.log",
        cwd=demo_dir,
    )  # fmt: skip
    assert isinstance(answer, list) and len(answer) == 1, answer
    choice = answer[0]["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str)
    assert 1 <= answer[0]["usage"]["completion_tokens"] <= 4
