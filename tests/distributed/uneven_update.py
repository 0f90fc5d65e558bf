"""Run by ``torchrun --nproc_per_node 2`` (``test_on_policy_ranks.py``): the on-policy loop on a
toy algorithm whose ranks roll out different numbers of rows, one of them none in the second
iteration. The model is linear, its loss the mean of ``w . x`` over a minibatch's rows, and
every row on rank r is the same vector ``A[r]``, so a step's gradient is the mean of the
``A[r]`` weighted by the rows each rank holds in it whatever the shuffle; plain SGD makes the
final weights that sum of gradients. Rank 0 writes the weights and the history as JSON to
``argv[1]``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from rlhf.config import DistributedConfig, OnPolicyConfig
from rlhf.tracking import Tracker
from rlhf.training import distributed
from rlhf.training.engine import build_engine, prepare_backend
from rlhf.training.on_policy_loop import Experience, OnPolicyAlgorithm, Trained, train_on_policy

A = [[1.0, -2.0, 0.5], [-3.0, 1.0, 4.0]]  # rank r's rows
ROWS = [[5, 1], [3, 0]]  # rows per rank, iteration by iteration
LR, W0, MINIBATCH, EPOCHS = 0.1, [0.2, -0.1, 0.3], 4, 2  # 2 rows per rank per step


def main(out: Path) -> None:
    device = torch.device("cpu")
    world = prepare_backend(DistributedConfig(), device)
    model = torch.nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([W0]))
    engine = build_engine(model, LR, 0.0, 0.0, DistributedConfig(), device)
    engine.optimizer = torch.optim.SGD(model.parameters(), lr=LR)  # updates the sum shows

    def rollout(prompt_rows: list[int], iteration: int) -> Experience:
        n = ROWS[iteration][world.rank]
        rows = torch.tensor([A[world.rank]] * max(n, 1))  # a rank without rows holds a row 0
        stats = {"reward/score_mean": 0.0, "kl/mean": 0.0, "response/length_mean": 1.0,
                 "policy/entropy": 1.0, "rows/count": float(n)}  # fmt: skip
        return Experience(rows, n, stats, ([], [], []), counts=("rows/count",))

    def loss(batch: torch.Tensor, rows: torch.Tensor, gradient_step: int):
        value = engine.module(batch[rows]).mean()
        return {"policy": value}, {"loss/rows": float(len(rows))}

    algorithm = OnPolicyAlgorithm(
        name="toy", trained=[Trained("policy", engine, LR)], prompts_per_iteration=2,
        epochs=EPOCHS, minibatch_size=MINIBATCH, rollout=rollout, loss=loss,
    )  # fmt: skip
    config = OnPolicyConfig(iterations=len(ROWS), warmup_iterations=0, checkpoint_every=0,
                            sample_every=0)  # fmt: skip
    history = train_on_policy(algorithm, config, 8, device, Tracker(), 0.0, out / "ckpt", {},
                              None)  # fmt: skip
    if world.is_main:
        weights = model.weight.detach()[0].tolist()
        (out / "result.json").write_text(json.dumps({"weights": weights, "history": history}))
    distributed.barrier()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
