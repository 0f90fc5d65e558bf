"""Shared fixtures: a small demo data set, prepared once per session, and an isolated MLflow
store and cache so tests never write into the working tree."""

from __future__ import annotations

import pytest

from rlhf.config import DemoConfig, PrepareConfig

SMALL_DEMO = DemoConfig(sft_rows=400, preference_rows=400, prompt_rows=60, eval_prompt_rows=20)


@pytest.fixture(autouse=True, scope="session")
def _isolated_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("env")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    mp.setenv("RLHF_CACHE_DIR", str(root / "cache"))
    mp.setenv("HF_HUB_OFFLINE", "1")  # nothing may come from a hub
    mp.setenv("TOKENIZERS_PARALLELISM", "false")
    yield
    mp.undo()


@pytest.fixture(scope="session")
def demo_files(tmp_path_factory):
    from rlhf.data.demo_task import write_demo_files

    return write_demo_files(tmp_path_factory.mktemp("demo"), SMALL_DEMO)


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, demo_files):
    """The small demo task prepared into the five artifacts (unpaired: the preference pairs
    split in two): {name: folder}."""
    from rlhf.stages import prepare

    out = tmp_path_factory.mktemp("prepared")
    outputs = prepare.PrepareOutputs.in_folder(out)
    prepare.run(
        PrepareConfig(unpaired_from_preferences=True),
        prepare.PrepareInputs(
            [str(demo_files["sft"])],
            [str(demo_files["preferences"])],
            [str(demo_files["prompts"])],
            [str(demo_files["eval_prompts"])],
        ),
        outputs,
    )
    return {n: str(out / n) for n in prepare.ARTIFACTS}


@pytest.fixture(scope="session")
def micro_sft(prepared, tmp_path_factory):
    """A micro SFT model trained for seconds on the small demo task: its folder."""
    from rlhf.config import SFTConfig
    from rlhf.stages import sft

    out = tmp_path_factory.mktemp("micro") / "sft"
    cfg = SFTConfig(base_model="preset:micro-llama", epochs=2, batch_size=16, eval_every=0)
    sft.run(cfg, sft.SFTInputs(prepared["sft"]), sft.ModelOutputs(str(out)))
    return str(out)


@pytest.fixture(scope="session")
def micro_models(micro_sft, prepared):
    """The micro SFT model and reward models on it, trained for seconds: {"sft", "reward"
    (the default log_ratio head), "reward_scalar"}."""
    from pathlib import Path

    from rlhf.config import RewardConfig
    from rlhf.stages import reward

    root = Path(micro_sft).parent
    reward.run(
        RewardConfig(epochs=1, batch_size=16, eval_every=0),
        reward.RewardInputs(prepared["preferences"], micro_sft),
        reward.ModelOutputs(str(root / "reward")),
    )
    reward.run(
        RewardConfig(epochs=1, batch_size=16, eval_every=0, head="scalar", lr=5e-4),
        reward.RewardInputs(prepared["preferences"], micro_sft),
        reward.ModelOutputs(str(root / "reward_scalar")),
    )
    return {n: str(root / n) for n in ("sft", "reward", "reward_scalar")}
