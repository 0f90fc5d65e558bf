"""What a registered version holds, without a server: where its Hugging Face folder is, the
pinned requirements, and the reward model pyfunc's checks of its input."""

from __future__ import annotations

import pandas as pd
import pytest

from rlhf.modeling import mlflow_models
from rlhf.modeling.reward_pyfunc import RewardModelPyfunc
from rlhf.registry import layout, requirements
from rlhf.storage import IntegrityError


def test_hf_folder_from_the_manifest(tmp_path):
    assert layout.hf_folder(tmp_path, {layout.HF_FOLDER: "model"}) == tmp_path / "model"
    # A version registered before MLflow models: the plain HF folder itself.
    assert layout.hf_folder(tmp_path, {"artifact": "sft_model"}) == tmp_path
    with pytest.raises(IntegrityError, match="hf_folder: unsafe path '../elsewhere'"):
        layout.hf_folder(tmp_path, {layout.HF_FOLDER: "../elsewhere"})


def test_requirements_pin_the_installed_public_versions():
    from importlib import metadata

    pins = dict(r.split("==") for r in requirements.pinned(("torch", "mlflow")))
    assert pins["torch"] == metadata.version("torch").split("+")[0]  # "2.13.0+cpu" -> 2.13.0
    assert pins["mlflow"] == metadata.version("mlflow")
    with pytest.raises(RuntimeError, match="no-such-distribution is not installed"):
        requirements.pinned(("no-such-distribution",))


def test_a_lora_adapter_is_refused_with_the_way_out(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(ValueError, match="LoRA adapter .* lora.publish: merged"):
        mlflow_models.save_policy(tmp_path, tmp_path / "out", {}, True, "s3://b/policy")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "frame, error",
    [
        (pd.DataFrame({"prompt": ["Hi"]}), "no response column"),
        (pd.DataFrame({"prompt": [], "response": []}), "no rows to score"),
        (pd.DataFrame({"prompt": ["Hi", None], "response": ["a", "b"]}), "row 1, prompt: "),
    ],
)
def test_reward_pyfunc_names_what_is_wrong_with_its_input(frame, error):
    with pytest.raises(ValueError, match=error):
        RewardModelPyfunc().predict(None, frame)  # checked before the scorer is needed
