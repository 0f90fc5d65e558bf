"""Text side of the demo task: the fixed vocabulary, recipe generator and answers with flaws.

Everything is drawn from small closed word lists so that a ~2M-parameter model with a tiny
byte-level BPE tokenizer can learn the task from scratch: a perfect answer only copies
ingredient words from the prompt. The gold reward lives in ``demo_task.py``.
"""

from __future__ import annotations

import dataclasses
import random

# Single lowercase words, so that "is this item an ingredient" is an exact set lookup. None of
# them is a substring-word of the templates, tools, verbs or chatter below.
INGREDIENTS: tuple[str, ...] = (
    "onion", "garlic", "beef", "rice", "carrot", "potato", "tomato", "chicken",
    "pork", "butter", "flour", "sugar", "salt", "eggs", "milk", "cheese",
    "bread", "pasta", "beans", "lentils", "spinach", "mushrooms", "celery", "ginger",
    "lemon", "honey", "basil", "parsley", "cream", "yogurt", "oats", "apple",
    "banana", "tofu", "shrimp", "salmon", "corn", "peas", "cabbage", "cucumber",
)  # fmt: skip

# Distractors: they appear in recipes but do not belong on a shopping list.
TOOLS: tuple[str, ...] = (
    "pan", "pot", "bowl", "oven", "knife", "tray", "skillet", "blender", "colander", "spoon",
)  # fmt: skip

VERBS: tuple[str, ...] = (
    "chop", "slice", "dice", "fry", "boil", "bake", "stir", "mix",
    "roast", "mash", "peel", "grate", "steam", "toast", "simmer",
)  # fmt: skip

# Sentence templates by (ingredient slots, tool slot). {v} is a verb, {a}/{b} ingredients, {t}
# a tool ({at} with its article). Short on purpose: a prompt stays under ~40 words.
TEMPLATES: dict[tuple[int, bool], tuple[str, ...]] = {
    (1, False): ("{V} the {a}.", "Serve with {a}.", "Then {v} the {a}."),
    (1, True): ("{V} the {a} in {at}.", "Put the {a} in the {t}.", "Use {at} to {v} the {a}."),
    (2, False): ("{V} the {a} and the {b}.", "{V} the {a} with the {b}."),
    (2, True): ("Add the {a} and {b} to the {t}.", "{V} the {a} and {b} in {at}."),
}

# Chatter around the list: no vocabulary words, so it only costs precision and length.
CHATTER_PREFIXES: tuple[str, ...] = (
    "Sure! Here is your list:",
    "Here you go:",
    "Of course. You will need:",
)
CHATTER_SUFFIXES: tuple[str, ...] = (
    "Enjoy your meal!",
    "Happy cooking!",
    "Let me know if you need anything else.",
    "Have a nice day.",
)

# Named flaws, each clearly visible in the text and each lowering the gold reward.
FLAWS: tuple[str, ...] = ("missing", "extra_tool", "wrong_ingredient", "duplicate", "chatter")


@dataclasses.dataclass(frozen=True)
class Recipe:
    text: str
    ingredients: tuple[str, ...]  # in order of first appearance; the perfect answer
    tools: tuple[str, ...]  # tools the recipe mentions (the natural distractors)


def make_recipe(rng: random.Random) -> Recipe:
    """A recipe: its ingredient list, then 2-4 steps naming 2-5 distinct ingredients."""
    n_ing = rng.randint(2, 5)
    # Each ingredient is named exactly once, so a perfect answer copies the food words in
    # order: a copy task a model of a few hundred thousand parameters learns in a minute.
    n_sent = rng.randint(max(2, (n_ing + 1) // 2), min(4, n_ing))
    fresh = rng.sample(INGREDIENTS, n_ing)
    used: list[str] = []
    tools: list[str] = []
    sentences = []
    for i in range(n_sent):
        left = n_sent - i
        # At least one new ingredient per sentence, and enough left for the sentences after.
        lo = max(1, len(fresh) - 2 * (left - 1))
        hi = min(2, len(fresh) - (left - 1))
        k = rng.randint(lo, hi)
        names, fresh = fresh[:k], fresh[k:]
        used += names
        with_tool = rng.random() < 0.5
        template = rng.choice(TEMPLATES[(len(names), with_tool)])
        verb = rng.choice(VERBS)
        tool = rng.choice(TOOLS)
        if with_tool and tool not in tools:
            tools.append(tool)
        b = names[1] if len(names) > 1 else ""
        at = ("an " if tool[0] in "aeiou" else "a ") + tool
        sentences.append(
            template.format(V=verb.capitalize(), v=verb, a=names[0], b=b, t=tool, at=at)
        )
    # Like a real recipe, it opens with its ingredient list; the steps then mention tools,
    # which do not belong on a shopping list. Copying a list is within reach of a 2-layer
    # model; finding every food word scattered across free text was not (36% of sampled
    # answers perfect even when trained on perfect answers only).
    header = f"Ingredients: {', '.join(used)}."
    return Recipe(" ".join([header, *sentences]), tuple(used), tuple(tools))


def perfect_items(recipe: Recipe) -> list[str]:
    return list(recipe.ingredients)


def apply_flaw(items: list[str], flaw: str, recipe: Recipe, rng: random.Random) -> list[str]:
    """Return a copy of ``items`` with one list-level flaw (``chatter`` is added by join)."""
    items = list(items)
    if flaw == "missing" and len(items) > 1:
        del items[rng.randrange(len(items))]
    elif flaw == "extra_tool":
        tool = rng.choice(recipe.tools or TOOLS)
        items.insert(rng.randint(0, len(items)), tool)
    elif flaw == "wrong_ingredient":
        others = [w for w in INGREDIENTS if w not in recipe.ingredients]
        spots = [i for i, w in enumerate(items) if w in recipe.ingredients]
        items[rng.choice(spots)] = rng.choice(others)
    elif flaw == "duplicate":
        i = rng.randrange(len(items))
        items.insert(rng.randint(i + 1, len(items)), items[i])
    return items


def make_answer(recipe: Recipe, flaws: tuple[str, ...] | list[str], rng: random.Random) -> str:
    """The perfect answer with the given flaws applied (no flaws -> the perfect answer)."""
    unknown = set(flaws) - set(FLAWS)
    if unknown:
        raise ValueError(f"unknown flaw(s) {sorted(unknown)}; known: {FLAWS}")
    items = perfect_items(recipe)
    # In FLAWS order, so that no later flaw undoes an earlier one (a duplicate then dropped).
    for flaw in sorted(set(flaws), key=FLAWS.index):
        items = apply_flaw(items, flaw, recipe, rng)
    text = ", ".join(items)
    if "chatter" in flaws:
        if rng.random() < 0.5:
            text = f"{rng.choice(CHATTER_PREFIXES)} {text}"
        else:
            text = f"{text}. {rng.choice(CHATTER_SUFFIXES)}"
    return text


def make_sampled_answer(recipe: Recipe, error_rate: float, rng: random.Random) -> str:
    """An answer as an imperfect model samples it: errors strike item by item, so one answer
    can carry several (a skipped ingredient, a wrong one, a repeat, a tool), not one chosen
    flaw. Reward models trained on such answers judge policy samples, which look like this,
    far better than ones trained only on single-flaw answers."""
    items: list[str] = []
    others = [w for w in INGREDIENTS if w not in recipe.ingredients]
    for name in recipe.ingredients:
        r = rng.random()
        if r < error_rate / 3:
            continue  # skipped
        items.append(rng.choice(others) if r < 2 * error_rate / 3 else name)
        if rng.random() < error_rate / 2:
            items.append(rng.choice(items))  # a repeat of something already listed
        if rng.random() < error_rate / 4:
            items.append(rng.choice(recipe.tools or TOOLS))
    if not items:
        items = [rng.choice(recipe.ingredients)]
    text = ", ".join(items)
    if rng.random() < error_rate / 2:
        if rng.random() < 0.5:
            text = f"{rng.choice(CHATTER_PREFIXES)} {text}"
        else:
            text = f"{text}. {rng.choice(CHATTER_SUFFIXES)}"
    return text
