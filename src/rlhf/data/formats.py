"""Input data formats: recognising them, checking every row, and normalising rows to the schema
of the artifact they feed.

Normalised rows (``SCHEMAS`` holds the matching ``datasets.Features``)::

    sft           {"messages": [{"role", "content"}, ...]}             last message: assistant
    preferences   {"prompt": [...], "chosen": str, "rejected": str, "margin": float | None}
    prompts       {"prompt": [...]}                                      last message: user
    eval_prompts  {"prompt": [...], "reference": str | None}
    unpaired      {"prompt": [...], "completion": str, "label": bool}     label: desirable?

A plain-string prompt becomes ``[{"role": "user", "content": prompt}]``. Texts are kept as given
(no stripping), except answers cut out of a longer text by ``implicit_preference``.

Each ``normalise_<format>`` function takes a raw row and returns a list of normalised rows (a
ranking gives several) or raises ``_Invalid``; :func:`normalise_row` turns that into a
:class:`DataError` naming the file, row and field. Keys a format does not use are ignored.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import datasets

from rlhf.data.errors import DataError, Location, json_type_name

Message = dict[str, str]
Row = dict[str, Any]

ROLES = ("system", "user", "assistant")
HH_HUMAN = "\n\nHuman:"
HH_ASSISTANT = "\n\nAssistant:"

_MESSAGES = datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")})
SCHEMAS: dict[str, datasets.Features] = {
    "sft": datasets.Features({"messages": _MESSAGES}),
    "preferences": datasets.Features(
        {
            "prompt": _MESSAGES,
            "chosen": datasets.Value("string"),
            "rejected": datasets.Value("string"),
            "margin": datasets.Value("float64"),
        }
    ),
    "prompts": datasets.Features({"prompt": _MESSAGES}),
    "eval_prompts": datasets.Features({"prompt": _MESSAGES, "reference": datasets.Value("string")}),
    "unpaired": datasets.Features(
        {
            "prompt": _MESSAGES,
            "completion": datasets.Value("string"),
            "label": datasets.Value("bool"),
        }
    ),
}


class _Invalid(Exception):
    """A row breaks a rule; the caller knows the file and row."""

    def __init__(self, field: str | None, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


# --- field checks ------------------------------------------------------------------------------


def _required(row: Mapping[str, Any], key: str, field: str | None = None) -> Any:
    if row.get(key) is None:
        raise _Invalid(field or key, "is missing")
    return row[key]


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise _Invalid(field, f"must be a non-empty string, got {json_type_name(value)}")
    if not value.strip():
        raise _Invalid(field, "must be a non-empty string")
    return value


def _optional_text(row: Mapping[str, Any], key: str) -> str | None:
    return None if row.get(key) is None else _text(row[key], key)


def _number(value: Any, field: str) -> float:
    # bool is an int in Python but never a meaningful score.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid(field, f"must be a number, got {json_type_name(value)}")
    if not math.isfinite(value):
        raise _Invalid(field, f"must be a finite number, got {value}")
    return float(value)


# What a message list must end with, as an error message says it.
_ENDINGS = {"user": "the user's message", "assistant": "the assistant's answer"}


def _messages(value: Any, field: str, last_role: str | None, what: str) -> list[Message]:
    """A non-empty list of ``{role, content}`` messages whose last role is ``last_role`` (None:
    the caller checks); ``what`` names the list in messages (``the prompt``)."""
    if not isinstance(value, list):
        raise _Invalid(
            field, f"must be a list of {{role, content}} messages, got {json_type_name(value)}"
        )
    if not value:
        raise _Invalid(field, "must be a non-empty list of messages")
    out = []
    for i, message in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(message, Mapping):
            raise _Invalid(
                where, f"must be an object with role and content, got {json_type_name(message)}"
            )
        role = message.get("role")
        if role is None:
            raise _Invalid(f"{where}.role", f"is missing (one of {', '.join(ROLES)})")
        if role not in ROLES:
            got = repr(role) if isinstance(role, str) else json_type_name(role)
            raise _Invalid(f"{where}.role", f"must be one of {', '.join(ROLES)}, got {got}")
        content = _required(message, "content", f"{where}.content")
        out.append({"role": role, "content": _text(content, f"{where}.content")})
    if last_role is not None:
        _ends_with(out, last_role, field, what)
    return out


def _ends_with(messages: list[Message], role: str, field: str, what: str) -> None:
    last = messages[-1]["role"]
    if last != role:
        article = "an" if last == "assistant" else "a"
        raise _Invalid(
            field, f"{what} ends with {article} {last!r} turn; it must end with {_ENDINGS[role]}"
        )


def _prompt(value: Any, field: str = "prompt") -> list[Message]:
    """A prompt is a string (one user turn) or a conversation ending with a user message."""
    if isinstance(value, str):
        return [{"role": "user", "content": _text(value, field)}]
    if isinstance(value, list):
        return _messages(value, field, last_role="user", what="the prompt")
    raise _Invalid(field, f"must be a string or a list of messages, got {json_type_name(value)}")


def _distinct(chosen: str, rejected: str) -> None:
    # Whitespace-only differences teach a reward model nothing.
    if chosen.strip() == rejected.strip():
        raise _Invalid(
            "rejected", "is identical to 'chosen'; a preference needs two different answers"
        )


def _preference(prompt: list[Message], chosen: str, rejected: str, margin: float | None) -> Row:
    _distinct(chosen, rejected)
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "margin": margin}


def _margin(row: Mapping[str, Any]) -> float | None:
    return None if row.get("margin") is None else _number(row["margin"], "margin")


# --- sft formats -------------------------------------------------------------------------------


def normalise_prompt_response(row: Mapping[str, Any]) -> list[Row]:
    """``{prompt, response}``; the response may also be a list of assistant messages."""
    return [_prompt_answer(row, "response")]


def normalise_prompt_completion(row: Mapping[str, Any]) -> list[Row]:
    """``{prompt, completion}``, including TRL's conversational prompt/completion lists."""
    return [_prompt_answer(row, "completion")]


def _prompt_answer(row: Mapping[str, Any], answer_key: str) -> Row:
    prompt = _prompt(_required(row, "prompt"))
    answer = _required(row, answer_key)
    if isinstance(answer, list):
        answer_messages = _messages(answer, answer_key, "assistant", f"the {answer_key}")
    else:
        answer_messages = [{"role": "assistant", "content": _text(answer, answer_key)}]
    return {"messages": prompt + answer_messages}


def normalise_messages(row: Mapping[str, Any]) -> list[Row]:
    """``{messages: [...]}`` ending with the assistant message to learn."""
    messages = _messages(_required(row, "messages"), "messages", "assistant", "the conversation")
    if not any(m["role"] == "user" for m in messages):
        raise _Invalid("messages", "needs at least one user message")
    return [{"messages": messages}]


# --- preference formats ------------------------------------------------------------------------


def normalise_preference(row: Mapping[str, Any]) -> list[Row]:
    """``{prompt, chosen, rejected, margin?}`` with text answers."""
    prompt = _prompt(_required(row, "prompt"))
    chosen = _text(_required(row, "chosen"), "chosen")
    rejected = _text(_required(row, "rejected"), "rejected")
    return [_preference(prompt, chosen, rejected, _margin(row))]


def normalise_implicit_preference(row: Mapping[str, Any]) -> list[Row]:
    """``{chosen, rejected}``: two full texts whose shared beginning is the prompt.

    With Anthropic HH markers the texts are split at the last ``"\\n\\nAssistant:"`` of their
    shared part and the prompt is parsed into user/assistant turns. Without markers the shared
    part is cut at its last whitespace, so a prompt never ends inside a word, and becomes one
    user turn. Answers are stripped of the whitespace around the cut."""
    chosen = _text(_required(row, "chosen"), "chosen")
    rejected = _text(_required(row, "rejected"), "rejected")
    _distinct(chosen, rejected)
    shared = os.path.commonprefix([chosen, rejected])
    cut = shared.rfind(HH_ASSISTANT)
    if cut >= 0 and "Human:" in shared[:cut]:
        prompt = _parse_hh(chosen[:cut])
        start = cut + len(HH_ASSISTANT)
        answers = chosen[start:].strip(), rejected[start:].strip()
        for field, answer in zip(("chosen", "rejected"), answers, strict=True):
            if HH_HUMAN in answer or HH_ASSISTANT in answer:
                raise _Invalid(
                    field, "differs from the other answer before the final Assistant turn"
                )
    else:
        cut = len(shared) - 1
        while cut >= 0 and not shared[cut].isspace():
            cut -= 1
        if cut < 0 or not shared[:cut].strip():
            raise _Invalid(
                "chosen", "shares no prompt with 'rejected' (no common start ending in whitespace)"
            )
        prompt = [{"role": "user", "content": shared[:cut].strip()}]
        answers = chosen[cut:].strip(), rejected[cut:].strip()
    for field, answer in zip(("chosen", "rejected"), answers, strict=True):
        if not answer:
            raise _Invalid(field, "has no answer after the shared prompt")
    return [_preference(prompt, answers[0], answers[1], _margin(row))]


def _parse_hh(text: str) -> list[Message]:
    """``"\\n\\nHuman: a\\n\\nAssistant: b\\n\\nHuman: c"`` -> user/assistant/user turns. Text
    before the first marker, if any, becomes a system message."""
    text = text.lstrip()
    if text.startswith(("Human:", "Assistant:")):
        text = "\n\n" + text  # some copies of HH drop the leading blank line
    parts = re.split(r"\n\n(Human|Assistant):", text)
    messages = [{"role": "system", "content": parts[0].strip()}] if parts[0].strip() else []
    for speaker, content in zip(parts[1::2], parts[2::2], strict=True):
        if not content.strip():
            raise _Invalid(
                "chosen", f"turn {len(messages) + 1} ({speaker}) of the shared prompt is empty"
            )
        role = "user" if speaker == "Human" else "assistant"
        messages.append({"role": role, "content": content.strip()})
    if not messages or messages[-1]["role"] != "user":
        raise _Invalid("chosen", "the shared prompt must end with a Human turn")
    return messages


def normalise_conversational_preference(row: Mapping[str, Any]) -> list[Row]:
    """``{chosen: [...], rejected: [...]}``: two conversations equal up to their final assistant
    message, which is the answer; the shared messages are the prompt. In TRL's form the
    conversations hold only the answer and ``prompt`` (string or messages) holds the rest. When
    the conversations carry the prompt themselves, a ``prompt`` key is ignored."""
    chosen, rejected = (
        _messages(_required(row, side), side, "assistant", f"the {side} conversation")
        for side in ("chosen", "rejected")
    )
    history = chosen[:-1]
    if rejected[:-1] != history:
        raise _Invalid("rejected", _first_difference(history, rejected[:-1]))
    if history:
        _ends_with(history, "user", "chosen", "the chosen conversation before its final answer")
        prompt = history
    elif row.get("prompt") is None:
        raise _Invalid(
            "prompt",
            "is missing: 'chosen' and 'rejected' hold only the final answer, so the conversation "
            "before it must be given in 'prompt'",
        )
    else:
        prompt = _prompt(row["prompt"])
    return [_preference(prompt, chosen[-1]["content"], rejected[-1]["content"], _margin(row))]


def _first_difference(chosen: list[Message], rejected: list[Message]) -> str:
    """Where two conversations' histories (all but the final answer) part."""
    for i, (a, b) in enumerate(zip(chosen, rejected, strict=False)):
        if a != b:
            what = "role" if a["role"] != b["role"] else "content"
            return (
                f"message {i} differs from chosen's in its {what}; the two conversations must "
                "be the same except for their final answer"
            )
    return (
        f"has {len(rejected)} messages before its final answer and 'chosen' has {len(chosen)}; "
        "the two conversations must be the same except for their final answer"
    )


def normalise_ranking(row: Mapping[str, Any]) -> list[Row]:
    """``{prompt, responses, scores? | ranks?}`` -> every (better, worse) pair.

    ``responses`` are listed best first unless ``scores`` (higher is better) or ``ranks``
    (1 is best) give the order; equal scores or ranks give no pair."""
    prompt = _prompt(_required(row, "prompt"))
    responses = _required(row, "responses")
    if not isinstance(responses, list) or len(responses) < 2:
        raise _Invalid(
            "responses", f"must be a list of at least 2 strings, got {_describe(responses)}"
        )
    texts = [_text(r, f"responses[{i}]") for i, r in enumerate(responses)]
    seen: dict[str, int] = {}
    for i, text in enumerate(texts):
        if text.strip() in seen:
            raise _Invalid(f"responses[{i}]", f"is identical to responses[{seen[text.strip()]}]")
        seen[text.strip()] = i
    if row.get("scores") is not None and row.get("ranks") is not None:
        raise _Invalid("ranks", "give either 'scores' or 'ranks', not both")
    if row.get("scores") is not None:
        merit = _parallel_numbers(row["scores"], "scores", len(texts))
    elif row.get("ranks") is not None:
        merit = [-r for r in _parallel_numbers(row["ranks"], "ranks", len(texts))]
    else:
        merit = [float(-i) for i in range(len(texts))]
    order = sorted(range(len(texts)), key=lambda i: -merit[i])  # stable: ties keep list order
    return [
        _preference(prompt, texts[better], texts[worse], None)
        for n, better in enumerate(order)
        for worse in order[n + 1 :]
        if merit[better] > merit[worse]
    ]


def _describe(value: Any) -> str:
    return f"a list of {len(value)}" if isinstance(value, list) else json_type_name(value)


def _parallel_numbers(value: Any, field: str, length: int) -> list[float]:
    if not isinstance(value, list):
        raise _Invalid(field, f"must be a list of numbers, got {json_type_name(value)}")
    if len(value) != length:
        raise _Invalid(field, f"has {len(value)} values but 'responses' has {length}")
    return [_number(v, f"{field}[{i}]") for i, v in enumerate(value)]


def unpair(row: Row) -> list[Row]:
    """A normalised preference pair as two unpaired rows: the chosen answer labelled
    desirable, the rejected one undesirable (prepare's ``unpaired_from_preferences``)."""
    return [
        {"prompt": row["prompt"], "completion": row["chosen"], "label": True},
        {"prompt": row["prompt"], "completion": row["rejected"], "label": False},
    ]


# --- unpaired feedback -------------------------------------------------------------------------


def normalise_unpaired(row: Mapping[str, Any]) -> list[Row]:
    """``{prompt, completion, label}``: one answer and whether it is desirable (a JSON boolean,
    thumbs up or down). As in TRL's conversational form, ``prompt`` may be messages and
    ``completion`` a list holding the assistant's answer message."""
    prompt = _prompt(_required(row, "prompt"))
    completion = _required(row, "completion")
    if isinstance(completion, list):
        messages = _messages(completion, "completion", "assistant", "the completion")
        if len(messages) != 1:
            raise _Invalid(
                "completion", f"must hold one assistant message, got {len(messages)} messages"
            )
        text = messages[0]["content"]
    else:
        text = _text(completion, "completion")
    label = _required(row, "label")
    if not isinstance(label, bool):
        got = repr(label) if isinstance(label, str) else json_type_name(label)
        raise _Invalid("label", f"must be true or false (a JSON boolean), got {got}")
    return [{"prompt": prompt, "completion": text, "label": label}]


# --- prompts -----------------------------------------------------------------------------------


def normalise_prompt(row: Mapping[str, Any]) -> list[Row]:
    """``{prompt, reference?}``; the reference answer is kept for evaluation prompts only."""
    return [
        {"prompt": _prompt(_required(row, "prompt")), "reference": _optional_text(row, "reference")}
    ]


# --- registry and detection --------------------------------------------------------------------


@dataclass(frozen=True)
class Format:
    name: str
    artifact: str  # the artifact its rows feed ("prompt" feeds both prompts and eval_prompts)
    keys: str  # what a row holds, for messages and docs
    normalise: Callable[[Mapping[str, Any]], list[Row]]


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("prompt_response", "sft", "prompt, response", normalise_prompt_response),
        Format("prompt_completion", "sft", "prompt, completion", normalise_prompt_completion),
        Format("messages", "sft", "messages", normalise_messages),
        Format(
            "preference", "preferences", "prompt, chosen, rejected, margin?", normalise_preference
        ),
        Format(
            "implicit_preference", "preferences", "chosen, rejected", normalise_implicit_preference
        ),
        Format(
            "conversational_preference",
            "preferences",
            "chosen: [messages], rejected: [messages], prompt?",
            normalise_conversational_preference,
        ),
        Format("ranking", "preferences", "prompt, responses, scores? | ranks?", normalise_ranking),
        Format("prompt", "prompts", "prompt, reference?", normalise_prompt),
        Format("unpaired", "unpaired", "prompt, completion, label", normalise_unpaired),
    )
}

ARTIFACT_FORMATS: dict[str, tuple[str, ...]] = {
    "sft": ("prompt_response", "prompt_completion", "messages"),
    "preferences": ("preference", "implicit_preference", "conversational_preference", "ranking"),
    "prompts": ("prompt",),
    "eval_prompts": ("prompt",),
    "unpaired": ("unpaired",),
}


def detect_format(row: Mapping[str, Any], artifact: str) -> str | None:
    """The format of ``row`` among those ``artifact`` accepts, from its keys (null values count
    as absent), or None. Only conversational preferences need a look at a value."""
    keys = {k for k, v in row.items() if v is not None}
    if artifact == "sft":
        if "messages" in keys:
            return "messages"
        if {"prompt", "response"} <= keys:
            return "prompt_response"
        if {"prompt", "completion"} <= keys:
            return "prompt_completion"
    elif artifact == "preferences":
        if "responses" in keys:
            return "ranking"
        if {"chosen", "rejected"} <= keys:
            if isinstance(row["chosen"], list):
                return "conversational_preference"
            return "preference" if "prompt" in keys else "implicit_preference"
    elif artifact in ("prompts", "eval_prompts") and "prompt" in keys:
        return "prompt"
    elif artifact == "unpaired" and {"prompt", "completion", "label"} <= keys:
        return "unpaired"
    return None


def resolve_format(row: Mapping[str, Any], artifact: str, *, file: str, location: Location) -> str:
    """:func:`detect_format`, or a DataError listing the keys seen and the formats accepted."""
    found = detect_format(row, artifact)
    if found is None:
        accepted = "; ".join(f"{n} {{{FORMATS[n].keys}}}" for n in ARTIFACT_FORMATS[artifact])
        raise DataError(
            file,
            f"unknown format: keys seen {sorted(map(str, row))}; {artifact} accepts {accepted}",
            location,
        )
    return found


def normalise_row(
    fmt: str,
    row: Mapping[str, Any],
    *,
    file: str,
    location: Location,
    detected_from: tuple[Location, Mapping[str, Any]] | None = None,
) -> list[Row]:
    """Check ``row`` against format ``fmt`` and return its normalised rows.

    ``detected_from`` is the row (and its place) that ``fmt`` was detected from: a row that
    breaks ``fmt`` but looks like another format is then reported as a file of mixed formats,
    which says more than the field ``fmt`` misses."""
    try:
        return FORMATS[fmt].normalise(row)
    except _Invalid as e:
        problem = f"field {e.field!r}: {e.reason}" if e.field else e.reason
        other = detect_format(row, FORMATS[fmt].artifact)
        if detected_from is not None and other not in (None, fmt):
            first_location, first = detected_from
            raise DataError(
                file,
                f"looks like format {other} {{{FORMATS[other].keys}}} while the file was detected "
                f"as format {fmt} {{{FORMATS[fmt].keys}}} from its first row ({first_location})"
                f"{_differences(row, first, first_location)}; as {fmt}: {problem}. The rows of "
                "one file must share one format (give each format its own file)",
                location,
            ) from None
        raise DataError(file, e.reason, location, e.field) from None


def _differences(row: Mapping[str, Any], first: Mapping[str, Any], where: Location) -> str:
    """``; they differ in 'prompt' (absent here, a string on line 1)``: the keys whose presence
    or type differs between two rows (null counts as absent)."""

    def kind(value: Any) -> str:
        return "absent" if value is None else f"a {json_type_name(value)}"

    keys = sorted({k for k, v in [*row.items(), *first.items()] if v is not None}, key=str)
    found = [
        f"{k!r} ({kind(row.get(k))} here, {kind(first.get(k))} on {where})"
        for k in keys
        if kind(row.get(k)) != kind(first.get(k))
    ]
    return f"; they differ in {', '.join(found)}" if found else ""
