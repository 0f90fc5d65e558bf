"""What `rlhf run` shows a person while a pipeline runs, checked the same way wherever a test
runs one: a start line and a summary line per stage, plain progress lines (captured output is
no terminal), the table at the end, and none of kfp's executor JSON or banners."""

from __future__ import annotations

import re

# The table's line per stage starts with its name and time, then this headline.
HEADLINES = {
    "prepare": "sft rows ", "sft": "val loss ", "reward": "val accuracy ", "ppo": "score ",
    "evaluate": "gold win rate ",
}  # fmt: skip


def assert_run_console(out: str, stages: tuple[str, ...], sft_steps: int, rl_iterations: int,
                       max_lines: int = 60) -> None:  # fmt: skip
    lines = out.splitlines()
    assert len(lines) < max_lines, out
    for stage in stages:
        assert sum(line.startswith(f"==> {stage}: ") for line in lines) == 1, out
        assert sum(line.startswith(f"<== {stage} done in ") for line in lines) == 1, out
    steps = f"{sft_steps}/{sft_steps} steps"
    assert re.search(rf"^sft training: {steps} \(100%\), .*, took \d+s, loss \d", out, re.M), out
    iterations = f"{rl_iterations}/{rl_iterations} iterations"
    assert re.search(rf"^ppo training: {iterations} \(100%\)", out, re.M), out
    for noise in ("executor_input", "parameterValues", "KFP Executor", "Executing task", "-" * 40,
                  "View run", "View experiment"):  # fmt: skip
        assert noise not in out, noise
    table = out[out.index("stage ") :]
    for stage in stages:
        assert re.search(rf"^{stage} +\d+(m \d\d)?s  {HEADLINES[stage]}", table, re.M), table
