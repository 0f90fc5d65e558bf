"""Score (prompt, response) pairs with a trained reward model.

    from rlhf.modeling.reward_scoring import RewardScorer
    scorer = RewardScorer.load("outputs/reward_model")          # folder or s3:// URI
    scorer.score(["Create a shopping list from this recipe: ..."], ["onion, garlic"])
    # -> tensor([1.73])

A prompt is a string (one user turn) or a list of ``{"role", "content"}`` messages. Scores are
unnormalised: only differences between scores of answers to the same prompt are meaningful.

Two heads (``RewardConfig.head``): ``scalar``, a sequence classifier whose head is read as
``pooling`` says; and ``log_ratio``, a causal LM scored against the frozen model it started
from, beta * (log pi(y|x) - log ref(y|x)), with that reference saved inside the reward model's
folder (``reference/``) so the folder is all a scorer needs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlhf.config import POOLINGS, REWARD_HEADS
from rlhf.modeling import lora, models
from rlhf.modeling.encoding import Encoded, Messages, encode_prompt_answer
from rlhf.modeling.forward import sequence_logprob_sums
from rlhf.modeling.padding import collate, pad_right

SETTINGS_FILE = "rlhf_reward.json"  # how the model encodes inputs, saved beside the weights
REFERENCE_DIR = "reference"  # log_ratio head: the frozen base model, inside the reward model
HEADS = REWARD_HEADS
# Places a loaded model for inference and returns what to call (DeepSpeed's sharded module).
Placement = Callable[[PreTrainedModel], torch.nn.Module]


def as_messages(prompt: str | Messages) -> Messages:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def encode_for_reward(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str | Messages,
    answer: str,
    max_length: int,
    chat_template: bool = True,
    score_at_eos: bool = False,
) -> Encoded:
    """Prompt + answer as the reward model reads them. With ``score_at_eos=False`` the closing
    EOS is left off, so the score is read at the answer's last token: the position where the
    SFT model it starts from decides whether the answer is complete."""
    enc = encode_prompt_answer(tokenizer, as_messages(prompt), answer, max_length, chat_template)
    if not score_at_eos and enc.input_ids[-1] == tokenizer.eos_token_id and sum(enc.loss_mask) > 1:
        enc = Encoded(enc.input_ids[:-1], enc.loss_mask[:-1])
    return enc


def reward_scores(
    model: PreTrainedModel,
    examples: list[Encoded],
    pad_id: int,
    device: torch.device,
    pooling: str,
) -> torch.Tensor:
    """(B,) scalar rewards of right-padded ``examples``.

    ``last``: the head read at each sequence's last non-pad token. ``sum`` / ``mean``: the head
    read at every answer token (``Encoded.loss_mask``), summed or averaged, so each token
    carries its own share of the score: a repeated or foreign item can lower the score where
    it stands instead of having to be noticed from the last token."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    ids = pad_right([e.input_ids for e in examples], pad_id).to(device)
    attention = pad_right([[1] * len(e) for e in examples], 0).to(device)
    if pooling == "last":
        return model(input_ids=ids, attention_mask=attention).logits.squeeze(-1).float()
    model = lora.unwrap(model)  # a LoRA reward model: its transformers model, adapters active
    hidden = model.base_model(
        input_ids=ids, attention_mask=attention, use_cache=False
    ).last_hidden_state
    per_token = model.score(hidden).squeeze(-1).float()  # (B, T)
    answer = pad_right([e.loss_mask for e in examples], 0).to(device).float()
    total = (per_token * answer).sum(-1)
    return total if pooling == "sum" else total / answer.sum(-1).clamp(min=1.0)


def log_ratio_scores(
    model: PreTrainedModel,
    reference: PreTrainedModel,
    examples: list[Encoded],
    pad_id: int,
    device: torch.device,
    beta: float,
) -> torch.Tensor:
    """(B,) rewards beta * (log pi(y|x) - log ref(y|x)) of right-padded ``examples``, the answer
    tokens (``Encoded.loss_mask``, the closing EOS included) summed under both causal LMs."""
    batch = {k: v.to(device) for k, v in collate(examples, pad_id).items()}
    return beta * (
        sequence_logprob_sums(model, **batch) - sequence_logprob_sums(reference, **batch)
    )


class RewardScorer:
    """A reward model with the settings it was trained with."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        max_length: int = 256,
        chat_template: bool = True,
        device: str = "auto",
        score_at_eos: bool = False,  # RewardConfig's defaults; load() reads the trained settings
        pooling: str = "sum",
        reference: PreTrainedModel | None = None,  # given: the log_ratio head
        beta: float = 1.0,
        place: Placement | None = None,  # how each model is placed; default: moved to device
    ) -> None:
        self.device = models.pick_device(device)
        self.model = place(model) if place else model.to(self.device).eval()
        if reference is not None:
            reference = place(reference) if place else reference.to(self.device).eval()
        self.reference = reference
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.chat_template = chat_template
        self.score_at_eos = score_at_eos
        self.pooling = pooling
        self.beta = beta

    @classmethod
    def load(
        cls,
        uri: str,
        device: str = "auto",
        dtype: str = "float32",
        place: Placement | None = None,
    ) -> RewardScorer:
        """The reward model published at ``uri`` with its settings. ``place``: how each
        loaded model is placed for inference (sharded across ranks under ZeRO-3), instead of
        moving it whole to ``device``."""
        folder = Path(models.resolve(uri))
        settings = json.loads((folder / SETTINGS_FILE).read_text(encoding="utf-8"))
        head = settings.get("head", "scalar")  # models saved before heads existed are scalar
        if head not in HEADS:
            raise ValueError(f"{folder / SETTINGS_FILE}: head must be one of {HEADS}, got {head!r}")
        log_ratio = head == "log_ratio"
        return cls(
            models.load_causal_lm(str(folder), dtype)
            if log_ratio
            else models.load_reward_model(str(folder), dtype),
            models.load_tokenizer(str(folder)),
            settings["max_length"],
            settings["chat_template"],
            device,
            settings.get("score_at_eos", True),
            settings.get("pooling", "last"),  # models saved before pooling existed read "last"
            models.load_causal_lm(str(folder / REFERENCE_DIR), dtype) if log_ratio else None,
            float(settings.get("beta", 1.0)),
            place,
        )

    @torch.no_grad()
    def score(
        self, prompts: list[str | Messages], responses: list[str], batch_size: int = 64
    ) -> torch.Tensor:
        """(N,) rewards for ``responses[i]`` answering ``prompts[i]``."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        encoded = [
            encode_for_reward(
                self.tokenizer, p, r, self.max_length, self.chat_template, self.score_at_eos
            )
            for p, r in zip(prompts, responses, strict=True)
        ]
        pad_id = self.tokenizer.pad_token_id
        out = [
            log_ratio_scores(self.model, self.reference, batch, pad_id, self.device, self.beta)
            if self.reference is not None
            else reward_scores(self.model, batch, pad_id, self.device, self.pooling)
            for batch in (encoded[i : i + batch_size] for i in range(0, len(encoded), batch_size))
        ]
        return torch.cat(out).cpu() if out else torch.zeros(0)
