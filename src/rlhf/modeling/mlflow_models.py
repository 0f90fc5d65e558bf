"""The registered models as MLflow models that load and serve (``rlhf.registry.layout``
says where things sit in them).

The policy: the transformers flavor, task ``llm/v1/chat`` (OpenAI-style messages in, the
tokenizer's chat template applied; ``llm/v1/completions`` for a policy evaluated without one),
generating with the evaluation's sampling settings (the model config). The reward model: a
pyfunc model from code (``rlhf.modeling.reward_pyfunc``) scoring ``(prompt, response)`` rows
with ``RewardScorer``. Requirements are pinned from the installed versions
(``rlhf.registry.requirements``), never inferred.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import rlhf
from rlhf import storage
from rlhf.modeling import models
from rlhf.registry import layout, requirements

CHAT_TASK = "llm/v1/chat"
COMPLETIONS_TASK = "llm/v1/completions"


def generation_config(max_new_tokens: int, temperature: float, top_p: float) -> dict[str, Any]:
    """The policy's generation settings as the transformers pipeline takes them: sampled from
    the full distribution, as the evaluation samples (``modeling.generation``)."""
    return {
        "max_new_tokens": max_new_tokens,
        "do_sample": True,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": 0,
    }


def check_model_folder(folder: Path, what: str, setting: str) -> None:
    """``folder`` can be registered as the ``what`` (a whole transformers model), else a
    ValueError saying why and naming the settings that change it (``setting``: the
    evaluation's, e.g. ``registered_policy``)."""
    if (folder / "config.json").is_file():
        return
    if (folder / "adapter_config.json").is_file():
        raise ValueError(
            f"{folder}: the {what} is a LoRA adapter (lora.publish: adapter); a registered "
            "model must be a whole transformers model: train it with lora.publish: merged (the "
            f"default), or set the evaluation's {setting}: '' to evaluate it without registering"
        )
    raise ValueError(f"{folder}: no config.json; not a transformers model folder ({what})")


def save_policy(
    folder: Path, dest: Path, generation: Mapping[str, Any], chat_template: bool, source: str
) -> Path:
    """``dest``: the policy folder as an MLflow transformers model generating with
    ``generation``; manifest last. Its ``model/`` is the policy folder itself, byte for byte
    (weights in their own dtype and shards, tokenizer, chat template, our manifest of it): what
    was evaluated is what is registered, and a whole Hugging Face folder. MLflow keeps its own
    copy of the tokenizer in ``components/tokenizer``."""
    import mlflow.transformers
    from huggingface_hub import ModelCard

    check_model_folder(folder, "policy", "registered_policy")
    # MLflow 3.17 cannot save a checkpoint path with transformers 5 (it reads a pipeline
    # class's name where transformers now gives a string), so the model is loaded and saved,
    # and its saved weights are then replaced by the folder's own.
    components = {
        "model": models.load_causal_lm(str(folder)),
        "tokenizer": models.load_tokenizer(str(folder)),
    }
    with storage.atomic_dir(dest) as tmp:
        mlflow.transformers.save_model(
            transformers_model=components,
            path=str(tmp),
            task=CHAT_TASK if chat_template else COMPLETIONS_TASK,
            model_config=dict(generation),
            pip_requirements=requirements.pinned(requirements.POLICY),
            # A card of our own: MLflow would otherwise look the model up on the Hub.
            model_card=ModelCard(
                f"---\nlibrary_name: transformers\n---\nrlhf policy from {source}\n"
            ),
        )
        hf = mlflow.models.Model.load(str(tmp)).flavors["transformers"]["model_binary"]
        shutil.rmtree(tmp / hf)
        shutil.copytree(folder, tmp / hf)
        layout.write_manifest(tmp, layout.POLICY_ARTIFACT, hf, source)
    return dest


def save_reward_model(folder: Path, dest: Path, run_config: Mapping[str, Any], source: str) -> Path:
    """``dest``: the reward model folder as an MLflow pyfunc model scoring (prompt, response)
    rows (``rlhf.modeling.reward_pyfunc``), with ``rlhf`` bundled as its code; manifest last."""
    import mlflow.pyfunc
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from rlhf.modeling import reward_pyfunc  # imported when needed: it names MLflow's model

    check_model_folder(folder, "reward model", "registered_reward_model")
    signature = ModelSignature(
        inputs=Schema([ColSpec("string", c) for c in reward_pyfunc.COLUMNS]),
        outputs=Schema([ColSpec("double")]),
    )
    with storage.atomic_dir(dest) as tmp, tempfile.TemporaryDirectory() as code:
        package = Path(code) / "rlhf"  # the package's sources, without bytecode caches
        shutil.copytree(
            Path(rlhf.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__")
        )
        with warnings.catch_warnings():
            # The signature is given; MLflow warns that there is no input example regardless.
            warnings.filterwarnings("ignore", message=".*input example was not provided")
            mlflow.pyfunc.save_model(
                path=str(tmp),
                python_model=reward_pyfunc.__file__,  # a model from code: nothing pickled
                artifacts={reward_pyfunc.ARTIFACT: str(folder)},
                code_paths=[str(package)],
                signature=signature,
                model_config=dict(run_config),
                pip_requirements=requirements.pinned(requirements.REWARD_MODEL),
            )
        conf = mlflow.models.Model.load(str(tmp)).flavors["python_function"]
        layout.write_manifest(
            tmp,
            layout.REWARD_MODEL_ARTIFACT,
            conf["artifacts"][reward_pyfunc.ARTIFACT]["path"],
            source,
        )
    return dest
