"""The built-in demo task: shopping lists from recipes, with a hidden programmatic gold reward.

``generate(DemoConfig())`` gives the four demo data sets (SFT demonstrations mixing good and
flawed answers, Bradley-Terry-labelled preference pairs, RL prompts, held-out evaluation
prompts); ``gold_reward`` scores any answer. See docs/demo-task.md.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from rlhf import storage
from rlhf.config import DemoConfig
from rlhf.data.demo_recipes import (
    FLAWS,
    INGREDIENTS,
    TOOLS,
    VERBS,
    Recipe,
    make_answer,
    make_recipe,
    make_sampled_answer,
)

PROMPT_PREFIX = "Create a shopping list from this recipe: "
SPLITS = ("sft", "preferences", "prompts", "eval_prompts")

# Gold reward weights (docs/demo-task.md has the formula).
DUPLICATE_PENALTY = 0.2  # per repeated item
EXTRA_WORD_PENALTY = 0.05  # per word beyond the number of ingredients

_INGREDIENT_SET = frozenset(INGREDIENTS)
_ITEM_SEPARATORS = re.compile(r"[,.;:!?\n]+")
_WORD = re.compile(r"[^\s,.;:!?]+")
_MARKER = re.compile(r"from this recipe:", re.IGNORECASE)

# How preference candidates are drawn: perfect, one flaw or two flaws (half of them), or
# sampled as a model would, with an error rate drawn up to this (the other half).
_CANDIDATE_MIX = ((0.3, 0), (0.5, 1), (0.2, 2))
_SAMPLED_SHARE = 0.5
_MAX_ERROR_RATE = 0.6


def make_prompt(recipe_text: str) -> str:
    return PROMPT_PREFIX + recipe_text


def _user_text(prompt: str | list[dict[str, Any]]) -> str:
    if isinstance(prompt, str):
        return prompt
    users = [m.get("content", "") for m in prompt if m.get("role") == "user"]
    return str(users[-1]) if users else ""


def recipe_ingredients(prompt: str | list[dict[str, Any]]) -> list[str]:
    """The true shopping list of a prompt: its ingredient words in order of first appearance.

    Only the text after the last "from this recipe:" counts when the marker is present, so a
    chat template around the prompt does not matter. Tools are not ingredients."""
    text = _user_text(prompt)
    marks = list(_MARKER.finditer(text))
    if marks:
        text = text[marks[-1].end() :]
    seen: dict[str, None] = {}
    for word in re.findall(r"[a-z]+", text.lower()):
        if word in _INGREDIENT_SET:
            seen.setdefault(word)
    return list(seen)


def parse_items(response: str) -> list[str]:
    """Response items: split on commas (and sentence punctuation/newlines), stripped, lowercased."""
    return [s.strip().lower() for s in _ITEM_SEPARATORS.split(response) if s.strip()]


def gold_breakdown(prompt: str | list[dict[str, Any]], response: str) -> dict[str, float]:
    """The gold reward with its parts: recall, precision, duplicates, extra words, reward."""
    truth = set(recipe_ingredients(prompt))
    items = parse_items(response)
    hits = truth.intersection(items)
    duplicates = len(items) - len(set(items))
    extra_words = max(0, len(_WORD.findall(response)) - len(truth))
    recall = len(hits) / len(truth) if truth else 1.0
    precision = len(hits) / len(items) if items else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    raw = 2 * f1 - 1 - DUPLICATE_PENALTY * duplicates - EXTRA_WORD_PENALTY * extra_words
    return {
        "recall": recall,
        "precision": precision,
        "duplicates": float(duplicates),
        "extra_words": float(extra_words),
        "reward": min(1.0, max(-1.0, raw)),
    }


def gold_reward(prompt: str | list[dict[str, Any]], response: str) -> float:
    """Hidden gold score in [-1, 1]; 1 exactly for the perfect list, -1 for empty or garbage.

    ``clip(2*F1 - 1 - 0.2*duplicates - 0.05*extra_words, -1, 1)`` where F1 is over the recipe's
    ingredients (recall) and the response items (precision). Order does not matter."""
    return gold_breakdown(prompt, response)["reward"]


def preference_probability(gold_a: float, gold_b: float, temperature: float) -> float:
    """Bradley-Terry P(a preferred over b) = sigmoid((gold_a - gold_b) / T); T=0 is noise-free."""
    diff = gold_a - gold_b
    if temperature <= 0:
        return 1.0 if diff > 0 else 0.0 if diff < 0 else 0.5
    return 1.0 / (1.0 + math.exp(-diff / temperature))


def _split_rng(config: DemoConfig, split: str) -> random.Random:
    # One stream per split (string seeds hash deterministically), so resizing one split leaves
    # the others unchanged.
    return random.Random(f"rlhf-demo:{config.seed}:{split}")


def _recipes(rng: random.Random, n: int, exclude: set[str]) -> Iterator[Recipe]:
    """``n`` recipes with distinct texts, none in ``exclude`` (the held-out eval recipes)."""
    seen = set(exclude)
    made = 0
    while made < n:
        recipe = make_recipe(rng)
        if recipe.text not in seen:
            seen.add(recipe.text)
            made += 1
            yield recipe


def _draw_flaws(rng: random.Random) -> tuple[str, ...]:
    r = rng.random()
    for weight, n_flaws in _CANDIDATE_MIX:
        if r < weight:
            return tuple(rng.sample(FLAWS, n_flaws))
        r -= weight
    return ()


def _candidate_pair(recipe: Recipe, rng: random.Random) -> tuple[str, str, float, float]:
    """Two candidate answers for one prompt with different gold scores (ties are redrawn)."""
    prompt = make_prompt(recipe.text)

    def draw() -> str:
        if rng.random() < _SAMPLED_SHARE:
            return make_sampled_answer(recipe, rng.uniform(0.0, _MAX_ERROR_RATE), rng)
        return make_answer(recipe, _draw_flaws(rng), rng)

    while True:
        a, b = draw(), draw()
        ga, gb = gold_reward(prompt, a), gold_reward(prompt, b)
        if ga != gb:
            return a, b, ga, gb


def _sft_rows(config: DemoConfig, exclude: set[str]) -> list[dict[str, str]]:
    rng = _split_rng(config, "sft")
    n_good = round(config.sft_good_fraction * config.sft_rows)
    # Exact shares: the good answers, then the flaw types in turn; shuffled together.
    kinds: list[tuple[str, ...]] = [()] * n_good
    kinds += [(FLAWS[i % len(FLAWS)],) for i in range(config.sft_rows - n_good)]
    rng.shuffle(kinds)
    return [
        {"prompt": make_prompt(r.text), "response": make_answer(r, flaws, rng)}
        for r, flaws in zip(_recipes(rng, config.sft_rows, exclude), kinds, strict=True)
    ]


def _preference_rows(config: DemoConfig, exclude: set[str]) -> list[dict[str, str]]:
    rng = _split_rng(config, "preferences")
    rows = []
    for recipe in _recipes(rng, config.preference_rows, exclude):
        a, b, ga, gb = _candidate_pair(recipe, rng)
        a_wins = rng.random() < preference_probability(ga, gb, config.label_temperature)
        chosen, rejected = (a, b) if a_wins else (b, a)
        rows.append({"prompt": make_prompt(recipe.text), "chosen": chosen, "rejected": rejected})
    return rows


def _eval_recipes(config: DemoConfig) -> list[Recipe]:
    return list(_recipes(_split_rng(config, "eval"), config.eval_prompt_rows, set()))


def generate(config: DemoConfig | None = None) -> dict[str, list[dict[str, str]]]:
    """The four demo data sets, deterministic given ``config.seed``.

    Keys: "sft" {prompt, response}, "preferences" {prompt, chosen, rejected}, "prompts"
    {prompt}, "eval_prompts" {prompt, reference}. No eval recipe occurs in the other sets."""
    config = config or DemoConfig()
    if not 0.0 <= config.sft_good_fraction <= 1.0:
        raise ValueError(f"sft_good_fraction must be in [0, 1], got {config.sft_good_fraction}")
    eval_recipes = _eval_recipes(config)
    held_out = {r.text for r in eval_recipes}
    prompts_rng = _split_rng(config, "prompts")
    return {
        "sft": _sft_rows(config, held_out),
        "preferences": _preference_rows(config, held_out),
        "prompts": [
            {"prompt": make_prompt(r.text)}
            for r in _recipes(prompts_rng, config.prompt_rows, held_out)
        ],
        "eval_prompts": [
            {"prompt": make_prompt(r.text), "reference": ", ".join(r.ingredients)}
            for r in eval_recipes
        ],
    }


def label_agreement(config: DemoConfig | None = None) -> float:
    """Measured share of the config's preference pairs whose label matches the noise-free
    gold order (about 0.84 with the default temperature, 1.0 with temperature 0)."""
    config = config or DemoConfig()
    rows = _preference_rows(config, {r.text for r in _eval_recipes(config)})
    agree = sum(
        gold_reward(r["prompt"], r["chosen"]) > gold_reward(r["prompt"], r["rejected"])
        for r in rows
    )
    return agree / len(rows) if rows else 1.0


def labeller_agreement(config: DemoConfig | None = None) -> float:
    """How often two independent simulated labellers would agree: p^2 + (1-p)^2 where p is
    ``label_agreement`` (about 0.73 by default, InstructGPT's inter-labeller figure)."""
    p = label_agreement(config)
    return p * p + (1 - p) * (1 - p)


def write_demo_files(out_dir: str | Path, config: DemoConfig | None = None) -> dict[str, Path]:
    """Write sft.jsonl, preferences.jsonl, prompts.jsonl and eval_prompts.jsonl into ``out_dir``
    (each under a temporary name, then renamed, so readers never see half a file)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, rows in generate(config).items():
        path = out / f"{split}.jsonl"
        storage.atomic_write_text(
            path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        )
        paths[split] = path
    return paths


def demo_corpus(
    rows: Mapping[str, Iterable[Mapping[str, Any]]] | Iterable[Mapping[str, Any]],
) -> Iterator[str]:
    """Texts to train the demo tokenizer on: every string field of every row, then the whole
    vocabulary once (so every word the task can produce is seen)."""
    groups = rows.values() if isinstance(rows, Mapping) else [rows]
    for group in groups:
        for row in group:
            yield from (v for v in row.values() if isinstance(v, str))
    yield " ".join(INGREDIENTS + TOOLS + VERBS)
