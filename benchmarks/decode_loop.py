"""The rollout decode loop (``rlhf.modeling.decoding.decode``) against ``model.generate`` in one
process, interleaved, on the ``bench`` Llama: the same prompts and RNG seed for both (each
call's tokens are checked equal), and the same loop with finished rows kept in the batch, to
show what rows leaving the batch buys. ``--eos-norm`` lengthens the EOS row of the output
embedding so that rows end at different steps (0: the random model's own, rare, EOS).

    python benchmarks/decode_loop.py --batch 16 --new-tokens 64 --eos-norm 4 --repeats 7
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import DynamicCache

sys.path.insert(0, str(Path(__file__).resolve().parent))

from llama_shapes import build_llama, llama_config  # noqa: E402

from rlhf.modeling.decoding import decode  # noqa: E402

EOS, PAD = 1, 0


@torch.no_grad()
def keep_all(model, ids, mask, new_tokens: int) -> torch.Tensor:
    """The loop with finished rows kept in the batch (their tokens replaced by padding)."""
    batch, width = ids.shape
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    cache = DynamicCache(config=model.config)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache,
                use_cache=True, logits_to_keep=1)  # fmt: skip
    full = torch.cat([mask, mask.new_ones(batch, new_tokens)], 1)
    tokens, last = ids.new_full((batch, new_tokens), PAD), positions[:, -1:]
    running = torch.ones(batch, dtype=torch.bool)
    for step in range(new_tokens):
        token = torch.multinomial(torch.softmax(out.logits[:, -1].float(), -1), 1).squeeze(1)
        token = torch.where(running, token, PAD)
        tokens[:, step] = token
        running &= token != EOS
        if step == new_tokens - 1 or not bool(running.any()):
            return tokens[:, : step + 1]
        last = last + 1
        out = model(input_ids=token[:, None], attention_mask=full[:, : width + step + 1],
                    position_ids=last, cache=cache, use_cache=True, logits_to_keep=1)  # fmt: skip
    return tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--eos-norm", type=float, default=0.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = build_llama(llama_config("bench", 512)).eval()
    if args.eos_norm:
        with torch.no_grad():
            weight = model.get_output_embeddings().weight
            weight[EOS] *= args.eos_norm / weight[EOS].norm()
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(8, 40, (args.batch,), generator=g)
    width = int(lengths.max())
    mask = (torch.arange(width)[None] >= (width - lengths)[:, None]).long()
    ids = torch.randint(2, 512, (args.batch, width), generator=g) * mask
    new = args.new_tokens

    def generate() -> torch.Tensor:
        return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new,
                              do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                              pad_token_id=PAD, eos_token_id=EOS)[:, width:]  # fmt: skip

    runs = {
        "model.generate": generate,
        "decode loop": lambda: decode(model, ids, mask, new, EOS, PAD),
        "loop, finished rows kept": lambda: keep_all(model, ids, mask, new),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for repeat in range(args.repeats + 1):  # the first is a warm-up
        for name, run in runs.items():
            torch.manual_seed(repeat)
            started = time.perf_counter()
            tokens = run()
            seconds = time.perf_counter() - started
            if name == "model.generate":
                expected = tokens
            elif not torch.equal(tokens, expected):
                raise SystemExit(f"{name} sampled other tokens than model.generate")
            if repeat:
                times[name].append(seconds)
    ended = (expected == EOS).any(1)
    length = torch.where(ended, (expected == EOS).int().argmax(1) + 1, expected.shape[1])
    print(f"batch {args.batch}, at most {new} new tokens, mean response "
          f"{length.float().mean():.1f} tokens; medians of {args.repeats} repeats:")  # fmt: skip
    reference = times["model.generate"]
    for name, seconds in times.items():
        ratios = sorted(a / b for a, b in zip(reference, seconds, strict=True))
        print(f"| {name} | {statistics.median(seconds) * 1000:,.0f} ms | "
              f"{statistics.median(ratios):.2f}x [{ratios[0]:.2f}-{ratios[-1]:.2f}] |")  # fmt: skip


if __name__ == "__main__":
    main()
