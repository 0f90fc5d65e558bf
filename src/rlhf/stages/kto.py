"""KTO stage: Kahneman-Tversky optimisation on unpaired feedback (answers labelled desirable
or undesirable one at a time), no reward model (``algorithms/kto_loss.py``).

The policy starts from the SFT model, which is also the frozen reference. Each example also
gets a *mismatched* answer: its prompt with the answer of another row (a fixed pairing, half
the data set away, skipping rows with the same prompt), whose log-ratio under the policy
estimates KL(policy || reference), the reference point z0. The reference's log-probs of the
matched and mismatched answers are computed once and cached as DPO's are
(``stages/preference_reference.py``): the cache holds two sequences per row, the matched one
in its "chosen" slot and the mismatched one in its "rejected" slot. Each step runs the policy
on the batch's answers (with gradient) and on their mismatched answers (without: z0 is not
trained through), in the loop every supervised stage uses (``training/loop.py``).

Metrics, on train and validation: the loss, the mean implicit reward log pi/ref of the
desirable and of the undesirable answers and their difference (margin), z0 ("kl"), and the
share of answers on the side of z0 their label asks for (accuracy; when every log-ratio falls
below 0, z0 is clamped to 0 and that share is the share of undesirable answers). Validation takes z0 over the whole validation split.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import torch

from rlhf.algorithms.kto_loss import KTOOutput, kto_kl_estimate, kto_loss
from rlhf.config import KTOConfig
from rlhf.data.artifacts import load_split, manifest_checksum
from rlhf.data.rows import canonical_json, digest, group_numbers
from rlhf.modeling import lora, models
from rlhf.modeling.encoding import Encoded, encode_prompt_answer
from rlhf.modeling.forward import sequence_logprob_sums
from rlhf.modeling.packed import PackedRecords
from rlhf.modeling.padding import collate
from rlhf.modeling.preference_logprobs import REFERENCE_CACHE, cache_bytes
from rlhf.modeling.reward_scoring import as_messages
from rlhf.stages.preference_reference import preference_metrics, reference_logprobs
from rlhf.stages.publish import finish_training, publish_trained
from rlhf.stages.specs import KTOInputs, ModelOutputs
from rlhf.stages.training_start import start_training
from rlhf.tracking import Tracker
from rlhf.training.batching import length_grouped_batches
from rlhf.training.engine import Engine, build_engine, sharded_loading
from rlhf.training.loop import train

log = logging.getLogger("rlhf.kto")


@dataclass
class Example:
    completion: Encoded  # the prompt with its own labelled answer
    mismatched: Encoded  # the prompt with another row's answer: for the KL estimate
    desirable: bool

    def __len__(self) -> int:
        return max(len(self.completion), len(self.mismatched))

    # The reference cache (``preference_logprobs``) stores two sequences per row under the
    # names of a preference pair's halves.
    @property
    def chosen(self) -> Encoded:
        return self.completion

    @property
    def rejected(self) -> Encoded:
        return self.mismatched


def mismatched_index(prompts: Sequence[Any], i: int) -> int:
    """The row whose answer row ``i``'s prompt is paired with for the KL estimate: half the
    split away, moved on past rows with the same prompt (itself only when all share one)."""
    n = len(prompts)
    j = (i + max(n // 2, 1)) % n
    for _ in range(n):
        if prompts[j] != prompts[i]:
            return j
        j = (j + 1) % n
    return i


def run(
    config: KTOConfig, inputs: KTOInputs, outputs: ModelOutputs, tracker: Tracker | None = None
) -> dict[str, float]:
    tracker, started, device, ckpt_root, fingerprint, resume_path, _ = start_training(
        "kto", config, inputs, outputs.model, tracker
    )
    tokenizer = models.load_tokenizer(inputs.sft_model, config.trust_remote_code)
    pad_id = tokenizer.pad_token_id

    def encode(rows: datasets.Dataset) -> PackedRecords[Example]:
        # The rows stay in the memory-mapped split, read one at a time, and prompts are told
        # apart by group numbers (8 bytes a row): memory grows by the packed tokens alone.
        digests = bytearray()
        for batch in rows.select_columns(["prompt"]).iter(batch_size=1024):
            for prompt in batch["prompt"]:
                digests += digest(canonical_json(prompt))
        groups = group_numbers(digests)
        out = PackedRecords(Example)
        for i, r in enumerate(rows):
            messages = as_messages(r["prompt"])
            other = rows[int(mismatched_index(groups, i))]["completion"]
            matched, mismatched = (
                encode_prompt_answer(tokenizer, messages, answer, config.max_length,
                                     config.chat_template)
                for answer in (r["completion"], other)
            )  # fmt: skip
            out.append(Example(matched, mismatched, bool(r["label"])))
        return out

    train_set = encode(load_split(inputs.unpaired, "train"))
    val_set = encode(load_split(inputs.unpaired, "validation"))
    if not train_set:
        raise ValueError(f"{inputs.unpaired}: the train split is empty")
    desirable_share = sum(train_set.column("desirable")) / len(train_set)
    if desirable_share in (0.0, 1.0):
        log.warning("kto: every training answer is labelled %s", desirable_share == 1.0)

    def policy_engine() -> Engine:
        with sharded_loading(config.distributed):
            policy = models.load_causal_lm(
                inputs.sft_model, config.dtype, config.trust_remote_code,
                lora.quantization_config(config.lora, config.dtype),
            )  # fmt: skip
        policy = lora.apply_lora(policy, config.lora).to(device)
        return build_engine(
            policy, config.lr, config.weight_decay, config.max_grad_norm, config.distributed,
            device,
        )  # fmt: skip

    # As in DPO: under LoRA the reference is the policy with its adapters disabled.
    engine = policy_engine() if config.lora.r else None
    key, cached = reference_logprobs(
        "kto", inputs.unpaired, inputs.sft_model, ckpt_root, train_set, val_set, pad_id,
        config, device, lora_model=engine.model if engine else None,
    )  # fmt: skip
    ref = {k: v.to(device) for k, v in cached.items()}
    if engine is None:
        engine = policy_engine()

    def logprobs(examples: list[Encoded]) -> torch.Tensor:
        batch = {k: v.to(device) for k, v in collate(examples, pad_id).items()}
        return sequence_logprob_sums(engine.module, **batch)

    def loss_on(examples: list[Example], ref_matched: torch.Tensor, kl: torch.Tensor) -> KTOOutput:
        desirable = torch.tensor([e.desirable for e in examples], device=device)
        return kto_loss(logprobs([e.completion for e in examples]), ref_matched, desirable, kl,
                        config.beta, config.desirable_weight, config.undesirable_weight)  # fmt: skip

    def stats(out: KTOOutput, desirable: torch.Tensor) -> dict[str, float]:
        good, bad = out.rewards[desirable], out.rewards[~desirable]
        return {
            "rewards/desirable": good.mean().item() if len(good) else float("nan"),
            "rewards/undesirable": bad.mean().item() if len(bad) else float("nan"),
            # How far the implicit reward separates the two labels, whatever z0 is.
            "rewards/margin": (good.mean() - bad.mean()).item()
            if len(good) and len(bad)
            else float("nan"),
            "rewards/accuracy": out.accuracy(desirable).item(),
            "kl": out.kl.item(),
        }

    lengths = train_set.lengths()

    def batches_for_epoch(epoch: int) -> list[list[int]]:
        return length_grouped_batches(lengths, config.batch_size, config.seed, epoch)

    def loss_fn(batch: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
        idx = torch.tensor(batch, device=device)
        examples = [train_set[i] for i in batch]
        with torch.no_grad():
            kl = kto_kl_estimate(logprobs([e.mismatched for e in examples]),
                                 ref["train_rejected"][idx])  # fmt: skip
        out = loss_on(examples, ref["train_chosen"][idx], kl)
        desirable = torch.tensor([e.desirable for e in examples], device=device)
        return out.loss, stats(out, desirable)

    @torch.no_grad()
    def evaluate() -> dict[str, float]:
        if not val_set:
            return {}
        step = config.eval_batch_size
        chunks = [val_set[s : s + step] for s in range(0, len(val_set), step)]
        matched = torch.cat([logprobs([e.completion for e in c]) for c in chunks])
        mismatched = torch.cat([logprobs([e.mismatched for e in c]) for c in chunks])
        desirable = torch.tensor(val_set.column("desirable"), dtype=torch.bool, device=device)
        kl = kto_kl_estimate(mismatched, ref["val_rejected"])
        out = kto_loss(matched, ref["val_chosen"], desirable, kl, config.beta,
                       config.desirable_weight, config.undesirable_weight)  # fmt: skip
        return {
            "val/loss": out.loss.item(),
            **{f"val/{k}": v for k, v in stats(out, desirable).items()},
        }

    result = train(engine, batches_for_epoch, loss_fn, evaluate, config, ckpt_root, tracker,
                   stage="kto", fingerprint=fingerprint, resume_path=resume_path)  # fmt: skip
    metrics = preference_metrics(
        result,
        started,
        train_examples=float(len(train_set)),
        desirable_share=desirable_share,
    )
    engine.model.config.use_cache = True
    publish_trained(
        engine,
        tokenizer,
        outputs.model,
        lora_config=config.lora,
        lora_base=inputs.sft_model,
        manifest={
            "artifact": "kto_policy",
            "sft_model": inputs.sft_model,
            "data": str(inputs.unpaired),
            "data_sha256": manifest_checksum(inputs.unpaired),
            "reference_logprobs_key": key,
            "metrics": metrics,
        },
        tracker=tracker,
        extra_files={REFERENCE_CACHE: cache_bytes(key, cached)},
        log_artifacts=config.log_model_artifacts,
        publish_to=config.publish_to,
    )
    finish_training(metrics, ckpt_root, config.checkpoint_dir, tracker)
    return metrics
