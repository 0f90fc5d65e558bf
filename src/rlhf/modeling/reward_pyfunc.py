"""A reward model as an MLflow pyfunc model: ``(prompt, response)`` rows in, scores out.

    model = mlflow.pyfunc.load_model("models:/rlhf-reward-model@champion")
    model.predict(pd.DataFrame({"prompt": ["List the ingredients: ..."], "response": ["onion"]}))
    # -> [1.73]

It is ``RewardScorer`` on the reward model folder saved inside the MLflow model (artifact
``reward_model``), so scores equal the evaluation's, both heads. The model config says how it
runs: ``device``, ``dtype`` and ``batch_size`` (the evaluation's, when it was registered).
It is saved as a model from code (``rlhf.modeling.mlflow_models``): ``python_model`` is this file,
which names its model with ``mlflow.models.set_model``, so loading runs this file and unpickles
nothing; ``rlhf`` itself travels as the model's code.
"""

from __future__ import annotations

from typing import Any

import mlflow.models
import mlflow.pyfunc
import pandas as pd

from rlhf.modeling.reward_scoring import RewardScorer

ARTIFACT = "reward_model"  # the artifact holding the reward model's Hugging Face folder
COLUMNS = ("prompt", "response")


class RewardModelPyfunc(mlflow.pyfunc.PythonModel):
    """Scores ``prompt``/``response`` string columns with ``RewardScorer``."""

    def load_context(self, context: Any) -> None:
        config = context.model_config or {}
        self.batch_size = int(config.get("batch_size", 64))
        self.scorer = RewardScorer.load(
            context.artifacts[ARTIFACT],
            config.get("device", "auto"),
            config.get("dtype", "float32"),
        )

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> list[float]:
        """One score per row of a DataFrame with ``prompt`` and ``response`` columns."""
        missing = [c for c in COLUMNS if c not in getattr(model_input, "columns", ())]
        if missing:
            raise ValueError(f"reward model input: no {', '.join(missing)} column(s)")
        if len(model_input) == 0:
            raise ValueError("reward model input: no rows to score")
        for column in COLUMNS:
            for row, value in enumerate(model_input[column]):
                if not isinstance(value, str):
                    raise ValueError(
                        f"reward model input: row {row}, {column}: expected a string, "
                        f"got {type(value).__name__}"
                    )
        scores = self.scorer.score(
            list(model_input["prompt"]), list(model_input["response"]), self.batch_size
        )
        return [float(s) for s in scores]


mlflow.models.set_model(RewardModelPyfunc())  # what MLflow loads when it runs this file
