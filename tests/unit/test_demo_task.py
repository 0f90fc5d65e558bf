import dataclasses
import json
import random

import pytest

from rlhf.config import DemoConfig
from rlhf.data import demo_task as dt
from rlhf.data.demo_recipes import FLAWS, INGREDIENTS, TOOLS, make_answer, make_recipe

PROMPT = (
    "Create a shopping list from this recipe: Chop the onion and the garlic. "
    "Fry the beef in a pan. Serve with onion."
)
SMALL = DemoConfig(sft_rows=200, preference_rows=200, prompt_rows=100, eval_prompt_rows=50)


def test_recipe_ingredients_in_first_appearance_order_without_tools():
    assert dt.recipe_ingredients(PROMPT) == ["onion", "garlic", "beef"]
    messages = [
        {"role": "system", "content": "You help with cooking: rice."},
        {"role": "user", "content": PROMPT},
    ]
    assert dt.recipe_ingredients(messages) == ["onion", "garlic", "beef"]


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("onion, garlic, beef", 1.0),
        ("Beef, onion, garlic", 1.0),  # order and case do not matter
        ("onion, beef", 0.6),  # F1 = 0.8
        ("onion, garlic, pan, beef", 2 * 6 / 7 - 1 - 0.05),  # a tool: P = 3/4, one extra word
        ("onion, garlic, garlic, beef", 2 * 6 / 7 - 1 - 0.2 - 0.05),  # a duplicate
        ("onion, garlic, beef. Enjoy your meal!", 2 * 6 / 7 - 1 - 3 * 0.05),  # chatter
        ("onion, garlic, rice", 2 * 2 / 3 - 1),  # a wrong ingredient
        ("", -1.0),
        ("zzz qqq", -1.0),
    ],
)
def test_gold_reward_hand_worked(response, expected):
    assert dt.gold_reward(PROMPT, response) == pytest.approx(expected)


def test_gold_reward_bounded_and_perfect_is_max():
    rng = random.Random(0)
    for _ in range(300):
        recipe = make_recipe(rng)
        prompt = dt.make_prompt(recipe.text)
        perfect = dt.gold_reward(prompt, ", ".join(recipe.ingredients))
        assert perfect == 1.0
        for n in (1, 2):
            flawed = make_answer(recipe, rng.sample(FLAWS, n), rng)
            assert -1.0 <= dt.gold_reward(prompt, flawed) < perfect
    long_garbage = ", ".join(TOOLS * 5) + " la la la" * 30
    assert dt.gold_reward(PROMPT, long_garbage) == -1.0


def test_prompts_are_short_and_use_the_vocabulary():
    rng = random.Random(1)
    for _ in range(500):
        recipe = make_recipe(rng)
        assert 2 <= len(recipe.ingredients) <= 5
        assert set(recipe.ingredients) <= set(INGREDIENTS)
        assert len(dt.make_prompt(recipe.text).split()) <= 45


def test_generate_is_deterministic_and_seed_dependent():
    assert dt.generate(SMALL) == dt.generate(SMALL)
    assert dt.generate(SMALL) != dt.generate(dataclasses.replace(SMALL, seed=1))


def test_sizes_follow_config_and_sft_mix():
    data = dt.generate(SMALL)
    assert {k: len(v) for k, v in data.items()} == {
        "sft": 200,
        "preferences": 200,
        "prompts": 100,
        "eval_prompts": 50,
    }
    good = sum(dt.gold_reward(r["prompt"], r["response"]) == 1.0 for r in data["sft"])
    assert good == round(SMALL.sft_good_fraction * SMALL.sft_rows)
    assert set(data["sft"][0]) == {"prompt", "response"}
    assert set(data["preferences"][0]) == {"prompt", "chosen", "rejected"}
    assert set(data["prompts"][0]) == {"prompt"}
    assert set(data["eval_prompts"][0]) == {"prompt", "reference"}


def test_eval_prompts_are_held_out_and_references_perfect():
    data = dt.generate(SMALL)
    train = {r["prompt"] for split in ("sft", "preferences", "prompts") for r in data[split]}
    evals = [r["prompt"] for r in data["eval_prompts"]]
    assert len(set(evals)) == len(evals)
    assert not train & set(evals)
    for row in data["eval_prompts"]:
        assert dt.gold_reward(row["prompt"], row["reference"]) == 1.0


def test_preference_pairs_have_no_ties():
    for row in dt.generate(SMALL)["preferences"]:
        assert row["chosen"] != row["rejected"]
        assert dt.gold_reward(row["prompt"], row["chosen"]) != dt.gold_reward(
            row["prompt"], row["rejected"]
        )


def test_labellers_agree_73_percent_by_default_and_exactly_without_noise():
    p = dt.label_agreement(DemoConfig())  # the default's 30000 pairs, scored once
    assert p == pytest.approx(0.84, abs=0.02)
    assert p * p + (1 - p) * (1 - p) == pytest.approx(0.73, abs=0.02)
    small = DemoConfig(preference_rows=600)
    q = dt.label_agreement(small)
    assert dt.labeller_agreement(small) == pytest.approx(q * q + (1 - q) * (1 - q))
    assert dt.label_agreement(DemoConfig(preference_rows=2000, label_temperature=0.0)) == 1.0


def test_preference_probability():
    assert dt.preference_probability(1.0, 0.0, 0.0) == 1.0
    assert dt.preference_probability(0.0, 1.0, 0.0) == 0.0
    assert dt.preference_probability(0.5, 0.5, 0.4) == pytest.approx(0.5)
    assert dt.preference_probability(1.0, 0.6, 0.4) == pytest.approx(1 / (1 + 2.718281828**-1))


def test_write_demo_files(tmp_path):
    paths = dt.write_demo_files(tmp_path / "demo", SMALL)
    assert sorted(p.name for p in paths.values()) == [
        "eval_prompts.jsonl",
        "preferences.jsonl",
        "prompts.jsonl",
        "sft.jsonl",
    ]
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == sorted(
        p.name for p in paths.values()
    )  # no temporary files left behind
    rows = [json.loads(line) for line in paths["sft"].read_text(encoding="utf-8").splitlines()]
    assert rows == dt.generate(SMALL)["sft"]


def test_demo_corpus_covers_rows_and_vocabulary():
    data = dt.generate(SMALL)
    texts = list(dt.demo_corpus(data))
    assert data["sft"][0]["response"] in texts
    assert all(word in texts[-1] for word in INGREDIENTS + TOOLS)
