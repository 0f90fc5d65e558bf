"""Memory the training stages' data loading holds per row, measured through the loading code
alone (no model, no training): the prompts PPO and GRPO draw from, the SFT conversations (SFT's
splits, PPO-ptx, the evaluation's perplexity) and the preference pairs (reward model, DPO).

    python benchmarks/stage_loading_memory.py --sizes 10000 100000 --out bench_results/loading

For each size it writes benchmark rows (those of prepare_scaling.py), prepares them with the
real ``rlhf prepare``, then for each loader starts a fresh interpreter that imports everything,
trains the 512-token BPE the demo uses, and loads the split: what the loader adds to the peak
resident set (VmHWM, reset before loading) and to the resident set it keeps is recorded. The
per-row cost is the slope between two sizes. "list" is the way the stages loaded before (a
Python object per row and per token); "packed" is what they do now.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare_scaling import WORDS, write_input  # noqa: E402

LOADERS = [
    "prompts-list", "prompts-packed", "sft-list", "sft-packed", "pairs-list", "pairs-packed"
]  # fmt: skip


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def measure(loader: str, folder: Path) -> dict:
    """In this interpreter: load ``folder``'s split the ``loader`` way; bytes added."""
    from rlhf.config import DPOConfig, PPOConfig
    from rlhf.data.artifacts import load_split
    from rlhf.modeling.encoding import encode_conversation, encode_prompt, encode_prompt_answer
    from rlhf.modeling.packed import PackedEncoded
    from rlhf.modeling.tokenizer import train_bpe_tokenizer
    from rlhf.stages import dpo
    from rlhf.stages.on_policy import load_prompts

    texts = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))]
    tokenizer = train_bpe_tokenizer(texts, 512)
    config = PPOConfig()
    kind = loader.split("-")[0]
    uri = str(folder / {"prompts": "prompts", "sft": "sft", "pairs": "preferences"}[kind])
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before, start = _status("VmRSS"), time.perf_counter()
    if loader == "prompts-list":  # on_policy.load_prompts before
        messages = [r["prompt"] for r in load_split(uri, "train")]
        held = (
            messages,
            [encode_prompt(tokenizer, m, True)[-config.max_prompt_length :] for m in messages],
        )
    elif loader == "prompts-packed":
        held = load_prompts(uri, tokenizer, config)
    elif loader in ("sft-list", "sft-packed"):
        encoded = (
            encode_conversation(tokenizer, r["messages"], 512, True)
            for r in load_split(uri, "train")
        )
        held = PackedEncoded(encoded) if loader == "sft-packed" else list(encoded)
    elif loader == "pairs-packed":  # DPO's own encoding (the reward model's packs the same way)
        config = DPOConfig(max_length=512, chat_template=True)
        held = dpo.encode_pairs(load_split(uri, "train"), tokenizer, config)
    else:  # the reward model's and DPO's pairs before: two encoded answers per row
        held = [
            tuple(encode_prompt_answer(tokenizer, r["prompt"], r[a], 512, True) for a in
                  ("chosen", "rejected"))
            for r in load_split(uri, "train")
        ]  # fmt: skip
    seconds = time.perf_counter() - start
    rows = len(held[1]) if isinstance(held, tuple) else len(held)
    return {"loader": loader, "rows": rows, "seconds": round(seconds, 2),
            "peak_added_mb": round((_status("VmHWM") - before) / 2**20, 1),
            "kept_added_mb": round((_status("VmRSS") - before) / 2**20, 1)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--loaders", nargs="+", choices=LOADERS, default=LOADERS)
    p.add_argument("--out", type=Path, help="folder for stage_loading_memory.json")
    p.add_argument("--measure", nargs=2, metavar=("LOADER", "FOLDER"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure[0], Path(args.measure[1]))))
        return 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    results = []
    for size in args.sizes:
        work = Path(tempfile.mkdtemp(prefix="stage-loading-"))
        try:
            cmd = [sys.executable, "-m", "rlhf", "prepare", "--out", str(work / "out"),
                   "--no-track"]  # fmt: skip
            for kind in ("sft", "preferences", "prompts"):
                write_input(work / f"{kind}.jsonl", kind, size)
                cmd += [f"--{kind}", str(work / f"{kind}.jsonl")]
            subprocess.run(cmd, env=env, check=True, capture_output=True)
            for loader in args.loaders:
                done = subprocess.run(
                    [sys.executable, __file__, "--measure", loader, str(work / "out")],
                    env=env, check=True, capture_output=True, text=True,
                )  # fmt: skip
                row = {"size": size, **json.loads(done.stdout.splitlines()[-1])}
                results.append(row)
                print(json.dumps(row), flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "stage_loading_memory.json").write_text(json.dumps(results, indent=2) + "\n")
    print(
        "\n| loader | rows | seconds | peak added MB | kept added MB |\n| --- | --- | --- | --- | --- |"
    )
    for r in results:
        print(f"| {r['loader']} | {r['rows']:,} | {r['seconds']} | {r['peak_added_mb']} | "
              f"{r['kept_added_mb']} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
