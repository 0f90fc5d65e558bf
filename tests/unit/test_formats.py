"""Formats: detection, normalisation of every format, and the error for every broken rule."""

from __future__ import annotations

import pytest

from rlhf.data.errors import DataError, Location
from rlhf.data.formats import FORMATS, detect_format, normalise_row, resolve_format

FILE = "data/in.jsonl"
LINE = Location(7, "line")


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def normalise(fmt, row):
    return normalise_row(fmt, row, file=FILE, location=LINE)


def pref(prompt, chosen, rejected, margin=None):
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "margin": margin}


# --- detection ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("artifact", "row", "expected"),
    [
        ("sft", {"prompt": "p", "response": "r"}, "prompt_response"),
        ("sft", {"prompt": "p", "completion": "c"}, "prompt_completion"),
        ("sft", {"messages": [], "id": 3}, "messages"),
        ("preferences", {"prompt": "p", "chosen": "a", "rejected": "b"}, "preference"),
        ("preferences", {"chosen": "a", "rejected": "b"}, "implicit_preference"),
        ("preferences", {"prompt": None, "chosen": "a", "rejected": "b"}, "implicit_preference"),
        ("preferences", {"chosen": [], "rejected": []}, "conversational_preference"),
        ("preferences", {"prompt": "p", "responses": ["a", "b"]}, "ranking"),
        ("prompts", {"prompt": "p", "reference": "r"}, "prompt"),
        ("eval_prompts", {"prompt": "p"}, "prompt"),
        ("sft", {"prompt": "p", "chosen": "a", "rejected": "b"}, None),
        ("prompts", {"question": "q"}, None),
    ],
)
def test_detection_by_keys(artifact, row, expected):
    assert detect_format(row, artifact) == expected


def test_unknown_format_names_file_line_and_keys_seen():
    with pytest.raises(DataError) as info:
        resolve_format({"question": "q", "answer": "a"}, "sft", file=FILE, location=LINE)
    message = str(info.value)
    assert message.startswith(
        "data/in.jsonl: line 7: unknown format: keys seen ['answer', 'question']"
    )
    assert "prompt_response {prompt, response}" in message


# --- sft ---------------------------------------------------------------------------------------


def test_prompt_response_and_completion_become_messages():
    assert normalise("prompt_response", {"prompt": "p", "response": "r", "extra": 1}) == [
        {"messages": [user("p"), assistant("r")]}
    ]
    assert normalise("prompt_completion", {"prompt": "p", "completion": "c"}) == [
        {"messages": [user("p"), assistant("c")]}
    ]
    # TRL's conversational prompt/completion: both are message lists.
    row = {
        "prompt": [{"role": "system", "content": "s"}, user("p")],
        "completion": [assistant("c")],
    }
    assert normalise("prompt_completion", row) == [
        {"messages": [{"role": "system", "content": "s"}, user("p"), assistant("c")]}
    ]


def test_messages_keep_role_and_content_only():
    row = {"messages": [{**user("hi"), "name": "x"}, assistant("yo")]}
    assert normalise("messages", row) == [{"messages": [user("hi"), assistant("yo")]}]


# --- preferences -------------------------------------------------------------------------------


def test_explicit_preference_with_and_without_margin():
    assert normalise(
        "preference", {"prompt": "p", "chosen": "a", "rejected": "b", "margin": 2}
    ) == [pref([user("p")], "a", "b", 2.0)]
    assert normalise("preference", {"prompt": [user("p")], "chosen": "a", "rejected": "b"}) == [
        pref([user("p")], "a", "b")
    ]


def test_implicit_preference_anthropic_hh_prompt_parsed_to_turns():
    history = "\n\nHuman: What is 2+2?\n\nAssistant: 4.\n\nHuman: And 3+3?"
    row = {
        "chosen": history + "\n\nAssistant: 6.",
        "rejected": history + "\n\nAssistant: 7, I think.",
    }
    assert normalise("implicit_preference", row) == [
        pref([user("What is 2+2?"), assistant("4."), user("And 3+3?")], "6.", "7, I think.")
    ]


def test_implicit_preference_hh_answers_sharing_a_start_and_no_leading_blank_line():
    row = {
        "chosen": "Human: Name a colour.\n\nAssistant: Blue is one.",
        "rejected": "Human: Name a colour.\n\nAssistant: Blah.",
    }
    assert normalise("implicit_preference", row) == [
        pref([user("Name a colour.")], "Blue is one.", "Blah.")
    ]


def test_implicit_preference_without_markers_cuts_at_last_shared_whitespace():
    row = {"chosen": "The sky is blue today", "rejected": "The sky is black"}
    assert normalise("implicit_preference", row) == [
        pref([user("The sky is")], "blue today", "black")
    ]


@pytest.mark.parametrize(
    ("row", "field", "reason"),
    [
        ({"chosen": "Yes", "rejected": "No"}, "chosen", "shares no prompt"),
        ({"chosen": "Yes indeed", "rejected": "Yesterday"}, "chosen", "shares no prompt"),
        ({"chosen": "Q? A", "rejected": "Q? A "}, "rejected", "identical"),
        ({"chosen": "Q? ", "rejected": "Q? Answer"}, "chosen", "no answer after the shared prompt"),
        (
            {
                "chosen": "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant: d",
                "rejected": "\n\nHuman: a\n\nAssistant: x\n\nHuman: c\n\nAssistant: y",
            },
            "chosen",
            "before the final Assistant turn",
        ),
    ],
)
def test_implicit_preference_errors(row, field, reason):
    with pytest.raises(DataError) as info:
        normalise("implicit_preference", row)
    assert info.value.field == field
    assert reason in str(info.value)


def test_implicit_preference_when_one_text_is_a_prefix_of_the_other():
    # The shared part "Q? A" ends inside a word, so the cut falls before it.
    assert normalise("implicit_preference", {"chosen": "Q? A", "rejected": "Q? A B"}) == [
        pref([user("Q?")], "A", "A B")
    ]


def test_conversational_preference_full_conversations_and_trl_form():
    history = [user("hi"), assistant("hello"), user("joke?")]
    row = {"chosen": [*history, assistant("good one")], "rejected": [*history, assistant("no")]}
    assert normalise("conversational_preference", row) == [pref(history, "good one", "no")]

    trl = {"prompt": [user("joke?")], "chosen": [assistant("good")], "rejected": [assistant("no")]}
    assert normalise("conversational_preference", trl) == [pref([user("joke?")], "good", "no")]


@pytest.mark.parametrize(
    ("chosen", "rejected", "field", "reason"),
    [
        (
            [user("q"), assistant("a"), user("thanks")],
            [user("q"), assistant("b")],
            "chosen",
            "the chosen conversation ends with a 'user' turn; it must end with the assistant's "
            "answer",
        ),
        (
            [user("q"), assistant("a")],
            [user("q")],
            "rejected",
            "the rejected conversation ends with a 'user' turn; it must end with the "
            "assistant's answer",
        ),
        (
            [user("hi"), assistant("a")],
            [user("hello"), assistant("b")],
            "rejected",
            "message 0 differs from chosen's in its content; the two conversations must be the "
            "same except for their final answer",
        ),
        (
            [user("hi"), assistant("a")],
            [{"role": "system", "content": "hi"}, assistant("b")],
            "rejected",
            "message 0 differs from chosen's in its role",
        ),
        (
            [user("hi"), assistant("a")],
            [assistant("b")],
            "rejected",
            "has 0 messages before its final answer and 'chosen' has 1",
        ),
        (
            [user("hi"), assistant("x"), assistant("a")],
            [user("hi"), assistant("x"), assistant("b")],
            "chosen",
            "the chosen conversation before its final answer ends with an 'assistant' turn; it "
            "must end with the user's message",
        ),
        (
            [assistant("a")],
            [assistant("b")],
            "prompt",
            "is missing: 'chosen' and 'rejected' hold only the final answer, so the conversation "
            "before it must be given in 'prompt'",
        ),
    ],
)
def test_conversational_preference_errors_say_which_conversation_and_why(
    chosen, rejected, field, reason
):
    with pytest.raises(DataError) as info:
        normalise("conversational_preference", {"chosen": chosen, "rejected": rejected})
    assert str(info.value).startswith(f"{FILE}: line 7: field {field!r}: {reason}")


# --- ranking -----------------------------------------------------------------------------------


def pairs(rows):
    return [(r["chosen"], r["rejected"]) for r in rows]


def test_ranking_of_three_gives_exactly_three_pairs_in_list_order():
    rows = normalise("ranking", {"prompt": "p", "responses": ["best", "mid", "worst"]})
    assert pairs(rows) == [("best", "mid"), ("best", "worst"), ("mid", "worst")]
    assert all(r["prompt"] == [user("p")] and r["margin"] is None for r in rows)


def test_ranking_order_from_scores_and_from_ranks():
    by_scores = {"prompt": "p", "responses": ["a", "b", "c"], "scores": [0.1, 0.9, 0.5]}
    assert pairs(normalise("ranking", by_scores)) == [("b", "c"), ("b", "a"), ("c", "a")]
    by_ranks = {"prompt": "p", "responses": ["a", "b", "c"], "ranks": [3, 1, 2]}
    assert pairs(normalise("ranking", by_ranks)) == [("b", "c"), ("b", "a"), ("c", "a")]


def test_ranking_ties_give_no_pair():
    row = {"prompt": "p", "responses": ["a", "b", "c", "d"], "scores": [1, 2, 2, 0]}
    assert pairs(normalise("ranking", row)) == [
        ("b", "a"),
        ("b", "d"),
        ("c", "a"),
        ("c", "d"),
        ("a", "d"),
    ]
    assert normalise("ranking", {"prompt": "p", "responses": ["a", "b"], "ranks": [1, 1]}) == []


# --- every broken rule: a DataError naming file, line and field --------------------------------

PROMPT_RESPONSE = {"prompt": "p", "response": "r"}
PREF = {"prompt": "p", "chosen": "a", "rejected": "b"}
RANK = {"prompt": "p", "responses": ["a", "b", "c"]}


@pytest.mark.parametrize(
    ("fmt", "row", "field", "reason"),
    [
        ("prompt_response", {"prompt": "p"}, "response", "is missing"),
        ("prompt_response", {**PROMPT_RESPONSE, "response": None}, "response", "is missing"),
        (
            "prompt_response",
            {**PROMPT_RESPONSE, "response": 3},
            "response",
            "must be a non-empty string, got number",
        ),
        (
            "prompt_response",
            {**PROMPT_RESPONSE, "prompt": ""},
            "prompt",
            "must be a non-empty string",
        ),
        (
            "prompt_response",
            {**PROMPT_RESPONSE, "prompt": " \n\t"},
            "prompt",
            "must be a non-empty string",
        ),
        (
            "prompt_response",
            {**PROMPT_RESPONSE, "prompt": {"a": 1}},
            "prompt",
            "must be a string or a list of messages, got object",
        ),
        (
            "prompt_response",
            {**PROMPT_RESPONSE, "prompt": [assistant("x")]},
            "prompt",
            "the prompt ends with an 'assistant' turn; it must end with the user's message",
        ),
        (
            "prompt_completion",
            {"prompt": "p", "completion": [assistant("a"), user("b")]},
            "completion",
            "the completion ends with a 'user' turn; it must end with the assistant's answer",
        ),
        (
            "messages",
            {"messages": "hi"},
            "messages",
            "must be a list of {role, content} messages, got string",
        ),
        ("messages", {"messages": []}, "messages", "must be a non-empty list"),
        (
            "messages",
            {"messages": [user("hi")]},
            "messages",
            "the conversation ends with a 'user' turn; it must end with the assistant's answer",
        ),
        (
            "messages",
            {"messages": [{"content": "x"}, assistant("y")]},
            "messages[0].role",
            "is missing (one of system, user, assistant)",
        ),
        (
            "messages",
            {"messages": [{"role": 1, "content": "x"}, assistant("y")]},
            "messages[0].role",
            "must be one of system, user, assistant, got number",
        ),
        (
            "messages",
            {"messages": [user("hi"), {"role": "assistant", "content": 42}]},
            "messages[1].content",
            "must be a non-empty string, got number",
        ),
        (
            "messages",
            {"messages": [{"role": "bot", "content": "x"}, assistant("y")]},
            "messages[0].role",
            "must be one of system, user, assistant, got 'bot'",
        ),
        (
            "messages",
            {"messages": [user("hi"), {"role": "assistant"}]},
            "messages[1].content",
            "is missing",
        ),
        ("messages", {"messages": ["hi", assistant("y")]}, "messages[0]", "must be an object"),
        ("messages", {"messages": [assistant("y")]}, "messages", "needs at least one user message"),
        (
            "preference",
            {**PREF, "rejected": "a"},
            "rejected",
            "is identical to 'chosen'; a preference needs two different answers",
        ),
        ("preference", {**PREF, "chosen": 3}, "chosen", "must be a non-empty string, got number"),
        (
            "preference",
            {**PREF, "prompt": 3},
            "prompt",
            "must be a string or a list of messages, got number",
        ),
        ("preference", {**PREF, "rejected": "a  "}, "rejected", "is identical to 'chosen'"),
        ("preference", {**PREF, "chosen": ["a"]}, "chosen", "must be a non-empty string, got list"),
        ("preference", {**PREF, "margin": "big"}, "margin", "must be a number, got string"),
        ("preference", {**PREF, "margin": True}, "margin", "must be a number, got boolean"),
        ("preference", {**PREF, "margin": float("nan")}, "margin", "must be a finite number"),
        ("implicit_preference", {"chosen": "x y"}, "rejected", "is missing"),
        (
            "conversational_preference",
            {"chosen": [assistant("a")], "rejected": [assistant("b")]},
            "prompt",
            "is missing",
        ),
        (
            "ranking",
            {**RANK, "responses": ["a"]},
            "responses",
            "at least 2 strings, got a list of 1",
        ),
        ("ranking", {**RANK, "responses": "a"}, "responses", "at least 2 strings, got string"),
        ("ranking", {**RANK, "responses": ["a", 2]}, "responses[1]", "got number"),
        ("ranking", {**RANK, "responses": ["a", ""]}, "responses[1]", "must be a non-empty string"),
        (
            "ranking",
            {**RANK, "responses": ["a", "b", "a"]},
            "responses[2]",
            "is identical to responses[0]",
        ),
        ("ranking", {**RANK, "scores": [1, 2]}, "scores", "has 2 values but 'responses' has 3"),
        ("ranking", {**RANK, "scores": [1, "x", 2]}, "scores[1]", "must be a number, got string"),
        ("ranking", {**RANK, "ranks": 1}, "ranks", "must be a list of numbers"),
        ("ranking", {**RANK, "scores": [1, 2, 3], "ranks": [1, 2, 3]}, "ranks", "not both"),
        ("prompt", {"prompt": "p", "reference": ""}, "reference", "must be a non-empty string"),
    ],
)
def test_each_broken_rule_names_file_line_and_field(fmt, row, field, reason):
    with pytest.raises(DataError) as info:
        normalise(fmt, row)
    assert str(info.value).startswith(f"data/in.jsonl: line 7: field {field!r}: ")
    assert reason in str(info.value)
    assert (info.value.file, info.value.row, info.value.field) == (FILE, 7, field)


# --- a file whose rows are in different formats ------------------------------------------------

FIRST = Location(1, "line")


@pytest.mark.parametrize(
    ("fmt", "first", "row", "expected"),
    [
        (
            "preference",
            PREF,
            {"chosen": "x y", "rejected": "x z"},
            "looks like format implicit_preference {chosen, rejected} while the file was "
            "detected as format preference {prompt, chosen, rejected, margin?} from its first "
            "row (line 1); they differ in 'prompt' (absent here, a string on line 1); as "
            "preference: field 'prompt': is missing. The rows of one file must share one format",
        ),
        (
            "conversational_preference",
            {"chosen": [user("q"), assistant("a")], "rejected": [user("q"), assistant("b")]},
            PREF,
            "looks like format preference {prompt, chosen, rejected, margin?} while the file was "
            "detected as format conversational_preference {chosen: [messages], rejected: "
            "[messages], prompt?} from its first row (line 1); they differ in 'chosen' (a string "
            "here, a list on line 1), 'prompt' (a string here, absent on line 1), 'rejected' (a "
            "string here, a list on line 1); as conversational_preference: field 'chosen': must "
            "be a list of {role, content} messages, got string.",
        ),
        (
            "prompt_response",
            PROMPT_RESPONSE,
            {"messages": [user("q"), assistant("a")], "id": 4},
            "looks like format messages {messages} while the file was detected as format "
            "prompt_response {prompt, response} from its first row (line 1); they differ in "
            "'id' (a number here, absent on line 1), 'messages' (a list here, absent on line 1), "
            "'prompt' (absent here, a string on line 1), 'response' (absent here, a string on "
            "line 1); as prompt_response: field 'prompt': is missing.",
        ),
    ],
)
def test_a_row_of_another_format_names_both_formats_and_the_differing_fields(
    fmt, first, row, expected
):
    with pytest.raises(DataError) as info:
        normalise_row(fmt, row, file=FILE, location=LINE, detected_from=(FIRST, first))
    assert str(info.value).startswith(f"{FILE}: line 7: {expected}")
    assert (info.value.file, info.value.row, info.value.field) == (FILE, 7, None)


def test_a_bad_row_of_the_same_or_of_no_format_keeps_its_field_error():
    for row, field in (({**PREF, "chosen": ""}, "chosen"), ({"question": "q"}, "prompt")):
        with pytest.raises(DataError) as info:
            normalise_row("preference", row, file=FILE, location=LINE, detected_from=(FIRST, PREF))
        assert info.value.field == field


def test_every_format_is_registered_for_one_artifact():
    assert set(FORMATS) == {
        "prompt_response",
        "prompt_completion",
        "messages",
        "preference",
        "implicit_preference",
        "conversational_preference",
        "ranking",
        "prompt",
        "unpaired",
    }


def test_prompt_with_and_without_reference():
    assert normalise("prompt", {"prompt": "p"}) == [{"prompt": [user("p")], "reference": None}]
    assert normalise("prompt", {"prompt": "p", "reference": "r"}) == [
        {"prompt": [user("p")], "reference": "r"}
    ]


# --- unpaired feedback -------------------------------------------------------------------------


def test_unpaired_rows_with_text_or_conversational_prompts():
    assert detect_format({"prompt": "p", "completion": "a", "label": False}, "unpaired") == (
        "unpaired"
    )
    assert normalise("unpaired", {"prompt": "p", "completion": "a", "label": True}) == [
        {"prompt": [user("p")], "completion": "a", "label": True}
    ]
    # TRL's conversational form: prompt messages, completion one assistant message.
    row = {"prompt": [user("hi")], "completion": [assistant("yo")], "label": False}
    assert normalise("unpaired", row) == [
        {"prompt": [user("hi")], "completion": "yo", "label": False}
    ]


@pytest.mark.parametrize(
    "row, field, reason",
    [
        ({"prompt": "p", "completion": "a", "label": "true"}, "label",
         "must be true or false (a JSON boolean), got 'true'"),
        ({"prompt": "p", "completion": "a", "label": 1}, "label",
         "must be true or false (a JSON boolean), got number"),
        ({"prompt": "p", "completion": "a"}, "label", "is missing"),
        ({"prompt": "p", "completion": "", "label": True}, "completion",
         "must be a non-empty string"),
        ({"prompt": "p", "completion": [assistant("a"), assistant("b")], "label": True},
         "completion", "must hold one assistant message, got 2 messages"),
        ({"prompt": [assistant("x")], "completion": "a", "label": True}, "prompt",
         "the prompt ends with an 'assistant' turn; it must end with the user's message"),
    ],
)  # fmt: skip
def test_unpaired_errors_name_the_field(row, field, reason):
    with pytest.raises(DataError) as info:
        normalise("unpaired", row)
    assert (info.value.field, info.value.reason) == (field, reason)
