"""The token budget: rows whose prompt plus longest answer exceed ``max_tokens`` are dropped,
or their answers cut to fit. Counted with a tokenizer, or in UTF-8 bytes without one."""

from __future__ import annotations

from dataclasses import dataclass

from rlhf import storage
from rlhf.data.rows import Row


class TokenCounter:
    """Counts tokens with a tokenizer, or UTF-8 bytes without one (an upper bound on the token
    count of any byte-level BPE tokenizer, so a byte budget is never too generous)."""

    def __init__(self, tokenizer: str | None) -> None:
        self.tokenizer = None
        if tokenizer:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(str(storage.local_path(tokenizer)))

    def count(self, text: str) -> int:
        if self.tokenizer is None:
            return len(text.encode("utf-8"))
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def count_many(self, texts: list[str], batch: int = 1024) -> list[int]:
        """``count`` for many texts; a tokenizer encodes them in batches (much faster)."""
        if self.tokenizer is None:
            return [len(t.encode("utf-8")) for t in texts]
        counts: list[int] = []
        for start in range(0, len(texts), batch):
            encoded = self.tokenizer(texts[start : start + batch], add_special_tokens=False)
            counts.extend(len(ids) for ids in encoded["input_ids"])
        return counts

    def truncate(self, text: str, limit: int) -> str:
        """The longest start of ``text`` that counts at most ``limit``."""
        if self.tokenizer is None:
            return text.encode("utf-8")[:limit].decode("utf-8", errors="ignore")
        # Cut the original text at a token boundary rather than decoding ids, which need not
        # give the text back exactly; re-encoding a cut can merge differently, so re-check.
        offsets = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)[
            "offset_mapping"
        ]
        for n in range(min(limit, len(offsets)), 0, -1):
            cut = text[: offsets[n - 1][1]]
            if self.count(cut) <= limit:
                return cut
        return ""


def _prompt_and_answers(artifact: str, row: Row) -> tuple[list[dict[str, str]], list[str]]:
    if artifact == "sft":
        return row["messages"][:-1], [row["messages"][-1]["content"]]
    if artifact == "preferences":
        return row["prompt"], [row["chosen"], row["rejected"]]
    if artifact == "unpaired":
        return row["prompt"], [row["completion"]]
    return row["prompt"], []  # prompts are generated from, not trained on: no answer to count


def _with_answers(artifact: str, row: Row, answers: list[str]) -> Row:
    if artifact == "sft":
        return {"messages": [*row["messages"][:-1], {"role": "assistant", "content": answers[0]}]}
    if artifact == "unpaired":
        return {**row, "completion": answers[0]}
    return {**row, "chosen": answers[0], "rejected": answers[1]}


@dataclass
class Fitted:
    """What the budget made of one row: the row (None: dropped), its token count (prompt plus
    its longest answer) and whether its answers were cut."""

    row: Row | None
    tokens: int
    truncated: bool = False


def apply_budget(
    artifact: str, rows: list[Row], max_tokens: int, mode: str, counter: TokenCounter
) -> list[Fitted]:
    """For each row: kept if its prompt plus longest answer fits ``max_tokens``; with
    ``truncate``, over-long answers cut to fit unless the prompt alone fills the budget or the
    cut leaves an empty answer or two equal ones; else dropped. Rows are independent: callers
    may feed them in batches (a tokenizer counts a batch at once)."""
    out = []
    parts = [_prompt_and_answers(artifact, row) for row in rows]
    texts = [t for prompt, answers in parts for t in [*(m["content"] for m in prompt), *answers]]
    counts = iter(counter.count_many(texts))
    for row, (prompt, answers) in zip(rows, parts, strict=True):
        prompt_tokens = sum(next(counts) for _ in prompt)
        answer_tokens = [next(counts) for _ in answers]
        total = prompt_tokens + max(answer_tokens, default=0)
        if total <= max_tokens:
            out.append(Fitted(row, total))
            continue
        room = max_tokens - prompt_tokens
        fitted = None
        if mode == "truncate" and answers and room > 0:
            fitted = [
                a if n <= room else counter.truncate(a, room)
                for a, n in zip(answers, answer_tokens, strict=True)
            ]
            empty = any(not a.strip() for a in fitted)
            if empty or (len(fitted) == 2 and fitted[0].strip() == fitted[1].strip()):
                fitted = None
        if fitted is None:
            out.append(Fitted(None, total))
            continue
        tokens = prompt_tokens + max(counter.count(a) for a in fitted)
        out.append(Fitted(_with_answers(artifact, row, fitted), tokens, truncated=True))
    return out
