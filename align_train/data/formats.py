"""Formats (what an objective trains on) and layouts (how a source stores them): schemas, validation, conversions.

A **format** is what reaches the TRL trainer, one documented schema each:

| format       | fields                                   | trainers                 |
| ------------ | ---------------------------------------- | ------------------------ |
| `messages`   | messages: [{role, content}, ...]         | SFT                      |
| `completion` | prompt, completion                       | SFT (completion-only loss) |
| `preference` | prompt, chosen, rejected                 | DPO, SimPO, ORPO, CPO    |
| `feedback`   | prompt, completion, label (true/false)   | KTO, BCO                 |
| `documents`  | text                                     | SFT, midtrain            |

prompt / chosen / rejected / completion are either plain strings ("standard") or lists of chat
messages ("conversational"); TRL applies the tokenizer's chat template to the latter.

A **layout** is a way a published dataset stores one of them; each is read into its format's
schema. They are detected from the columns in the order of ``LAYOUTS`` (a source's ``format``
setting names a layout, or a format, to override the detection):

| layout                | columns                                 | becomes      | e.g.                                     |
| --------------------- | --------------------------------------- | ------------ | ---------------------------------------- |
| `preference`          | prompt, chosen, rejected                | preference   | HuggingFaceH4/ultrafeedback_binarized     |
| `implicit_preference` | chosen, rejected (the prompt inside)    | preference   | trl-lib/ultrafeedback_binarized           |
| `feedback`            | prompt, completion, label (bool or 0/1) | feedback     | trl-lib/kto-mix-14k                       |
| `safety_labels`       | prompt, response, is_safe               | feedback     | PKU-Alignment/BeaverTails                 |
| `completion`          | prompt, completion                      | completion   | TRL's prompt-completion SFT data          |
| `messages`            | messages                                | messages     | HuggingFaceH4/ultrachat_200k              |
| `documents`           | text                                    | documents    | plain-text corpora                        |

The shared prompt of an implicit-prompt pair is extracted by TRL's own ``extract_prompt`` (the
longest common prefix of the two conversations, or of the two texts); a string prompt beside
conversations that repeat it (the H4 layout) is handled as TRL's ``maybe_extract_prompt`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from trl.data_utils import extract_prompt, maybe_extract_prompt

ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class DataFormat:
    name: str
    fields: tuple[str, ...]
    text_fields: tuple[str, ...]  # fields that hold a string or a list of chat messages


FORMATS: dict[str, DataFormat] = {
    "messages": DataFormat("messages", ("messages",), ()),
    "preference": DataFormat("preference", ("prompt", "chosen", "rejected"), ("prompt", "chosen", "rejected")),
    "feedback": DataFormat("feedback", ("prompt", "completion", "label"), ("prompt", "completion")),
    "completion": DataFormat("completion", ("prompt", "completion"), ("prompt", "completion")),
    "documents": DataFormat("documents", ("text",), ()),
}

# What a trainer that takes one format takes as well: TRL's SFTTrainer reads chat demonstrations
# and prompt/completion pairs alike (the latter with a completion-only loss by default).
ALSO_ACCEPTED: dict[str, tuple[str, ...]] = {"messages": ("completion",)}


# --------------------------------------------------------------------------- row validation


def _normalise_messages(value: Any, field: str) -> list[dict[str, str]]:
    """A chat turn list reduced to {role, content}; raises ValueError naming what is wrong."""
    if not isinstance(value, list) or not value:
        raise ValueError(f"'{field}' must be a non-empty list of {{role, content}} messages")
    turns = []
    for i, turn in enumerate(value):
        if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
            raise ValueError(f"'{field}[{i}]' must be an object with 'role' and 'content'")
        role, content = turn["role"], turn["content"]
        if role not in ROLES:
            raise ValueError(f"'{field}[{i}].role' is {role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(content, str) or not content.strip():
            raise ValueError(f"'{field}[{i}].content' is empty or not a string")
        turns.append({"role": role, "content": content})
    return turns


def _text_or_messages(row: dict, field: str) -> str | list[dict[str, str]]:
    if field not in row or row[field] is None:
        raise ValueError(f"missing '{field}'")
    value = row[field]
    if isinstance(value, str):
        if not value.strip():
            raise ValueError(f"'{field}' is empty")
        return value
    return _normalise_messages(value, field)


def _label(row: dict, field: str = "label") -> bool:
    """true / false, or 1 / 0 (the integer labels of many published sets)."""
    if field not in row or row[field] is None:
        raise ValueError(f"missing '{field}'")
    value = row[field]
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"'{field}' is {value!r}; expected true or false (or 1 / 0)")


def _check_same_kind(values: dict[str, Any]) -> None:
    kinds = {f: isinstance(v, list) for f, v in values.items()}
    if len(set(kinds.values())) > 1:
        raise ValueError(
            "mixes plain strings and message lists: "
            + ", ".join(f"'{f}' is {'messages' if v else 'a string'}" for f, v in kinds.items())
        )


def _texts(row: dict, fields: tuple[str, ...]) -> dict:
    out = {f: _text_or_messages(row, f) for f in fields}
    _check_same_kind(out)
    return out


def _explicit_preference(row: dict) -> dict:
    out = {f: _text_or_messages(row, f) for f in ("prompt", "chosen", "rejected")}
    if out["chosen"] == out["rejected"]:
        raise ValueError("'chosen' and 'rejected' are identical")
    if isinstance(out["prompt"], str) and isinstance(out["chosen"], list) and isinstance(out["rejected"], list):
        # The H4 layout: a string prompt beside conversations that repeat it as their first turn(s).
        # TRL's rule: the conversations' shared turns are the prompt. Conversations that share no turn
        # get the string prompt as their user turn.
        extracted = maybe_extract_prompt(out)
        if extracted["prompt"]:
            return {"prompt": extracted["prompt"], "chosen": extracted["chosen"], "rejected": extracted["rejected"]}
        return {**out, "prompt": [{"role": "user", "content": out["prompt"]}]}
    _check_same_kind(out)
    return out


def _implicit_preference(row: dict) -> dict:
    pair = _texts(row, ("chosen", "rejected"))
    if pair["chosen"] == pair["rejected"]:
        raise ValueError("'chosen' and 'rejected' are identical")
    out = extract_prompt(pair)  # TRL: the longest shared prefix is the prompt
    prompt = out["prompt"]
    shared = all(pair[f][:len(prompt)] == prompt for f in ("chosen", "rejected"))
    if not shared or not prompt or (isinstance(prompt, str) and not prompt.strip()):
        raise ValueError("'chosen' and 'rejected' share no prompt: an implicit-prompt pair starts both with the same "
                         "prompt (the same first turn(s), or the same leading text)")
    if isinstance(prompt, list) and not any(t["role"] == "user" for t in prompt):
        raise ValueError("the turns 'chosen' and 'rejected' share (the prompt) hold no user turn")
    return {"prompt": prompt, "chosen": out["chosen"], "rejected": out["rejected"]}


def _feedback(row: dict) -> dict:
    return {**_texts(row, ("prompt", "completion")), "label": _label(row)}


def _safety_labels(row: dict) -> dict:
    texts = _texts(row, ("prompt", "response"))
    return {"prompt": texts["prompt"], "completion": texts["response"], "label": _label(row, "is_safe")}


def _completion(row: dict) -> dict:
    return _texts(row, ("prompt", "completion"))


def _messages(row: dict) -> dict:
    messages = _normalise_messages(row.get("messages"), "messages")
    if not any(t["role"] == "assistant" for t in messages):
        raise ValueError("'messages' has no assistant turn to learn from")
    return {"messages": messages}


def _documents(row: dict) -> dict:
    text = row.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ValueError("'text' must be a non-empty string")
    return {"text": text}


# --------------------------------------------------------------------------- layouts


@dataclass(frozen=True)
class Layout:
    """How a source stores one format: the columns that identify it and how a row becomes the format's row."""

    name: str
    columns: tuple[str, ...]
    format: str
    normalise: Callable[[dict], dict]  # raises ValueError saying what is wrong
    main: str  # the column whose kind (string or messages) decides whether the rows are conversational
    example: str  # a published dataset in this layout


# Detection order: the first layout whose columns are all present (most specific first).
LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (
    Layout("preference", ("prompt", "chosen", "rejected"), "preference", _explicit_preference, "chosen",
           "HuggingFaceH4/ultrafeedback_binarized"),
    Layout("implicit_preference", ("chosen", "rejected"), "preference", _implicit_preference, "chosen",
           "trl-lib/ultrafeedback_binarized"),
    Layout("feedback", ("prompt", "completion", "label"), "feedback", _feedback, "completion", "trl-lib/kto-mix-14k"),
    Layout("safety_labels", ("prompt", "response", "is_safe"), "feedback", _safety_labels, "response",
           "PKU-Alignment/BeaverTails"),
    Layout("completion", ("prompt", "completion"), "completion", _completion, "completion",
           "TRL prompt-completion data"),
    Layout("messages", ("messages",), "messages", _messages, "messages", "HuggingFaceH4/ultrachat_200k"),
    Layout("documents", ("text",), "documents", _documents, "text", "plain-text corpora"),
)}


def infer_layout(columns, among: tuple[str, ...] | None = None) -> str | None:
    """The first layout (of ``among``, default all) whose columns are all present."""
    for name in among or tuple(LAYOUTS):
        if all(c in columns for c in LAYOUTS[name].columns):
            return name
    return None


def infer_format(columns) -> str | None:
    """The format the columns' layout gives, or None."""
    layout = infer_layout(columns)
    return LAYOUTS[layout].format if layout else None


def layouts_for(setting: str | None) -> tuple[str, ...] | None:
    """The layouts a source's ``format`` setting allows: a format's layouts, one layout by name, or None (any)."""
    if setting is None:
        return None
    if setting in FORMATS:  # a format: any of its layouts (preference: explicit or implicit prompt)
        return tuple(name for name, layout in LAYOUTS.items() if layout.format == setting)
    return (setting,) if setting in LAYOUTS else None


def choose_layout(setting: str | None, columns) -> str | None:
    """The layout for a source: detected among those its ``format`` setting allows; an explicit setting that
    no layout's columns match validates (and reports every row) against the layout of its own name."""
    among = layouts_for(setting)
    found = infer_layout(columns, among)
    if found is None and setting is not None:
        return setting if setting in LAYOUTS else among[0]
    return found


def known_settings() -> list[str]:
    return list(dict.fromkeys([*LAYOUTS, *FORMATS]))


def describe_layouts() -> str:
    return "; ".join(f"{layout.name} ({', '.join(layout.columns)})" for layout in LAYOUTS.values())


def normalise_row(layout: str, row: dict) -> dict:
    """The row read through a layout (a format name is its own layout), validated; raises ValueError."""
    return LAYOUTS[layout].normalise(row)


def is_conversational(row: dict) -> bool:
    return any(isinstance(v, list) for v in row.values())


def is_list_feature(feature) -> bool:
    """An Arrow column of lists (a conversation's messages), under any of the names `datasets` gives them."""
    return type(feature).__name__ in ("List", "Sequence", "LargeList")


def has_conversations(features) -> bool:
    """Whether rows of this schema are conversational, read from the schema alone (no row, so no stream read)."""
    return any(is_list_feature(feature) for feature in features.values())


# --------------------------------------------------------------------------- Arrow schemas


def features_for(fmt: str, conversational: bool):
    """The canonical ``datasets.Features`` of a format: every source of it, once read, has exactly these."""
    from datasets import Features, List, Value

    text = List({"role": Value("string"), "content": Value("string")}) if conversational else Value("string")
    if fmt == "messages":
        return Features({"messages": List({"role": Value("string"), "content": Value("string")})})
    if fmt == "documents":
        return Features({"text": Value("string")})
    spec = FORMATS[fmt]
    return Features({f: (Value("bool") if f == "label" else text) for f in spec.fields})


# --------------------------------------------------------------------------- conversions


def preference_to_feedback(dataset):
    """A pair becomes two unpaired rows, chosen desirable and rejected undesirable (TRL's own unpairing)."""
    from trl.data_utils import unpair_preference_dataset

    return unpair_preference_dataset(dataset)


CONVERSIONS: dict[tuple[str, str], Callable] = {
    ("preference", "feedback"): preference_to_feedback,
}


def accepted_formats(accepted: tuple[str, ...]) -> tuple[str, ...]:
    """The formats an objective trains on, with those its trainer reads as well (``ALSO_ACCEPTED``)."""
    return tuple(dict.fromkeys([*accepted, *(also for fmt in accepted for also in ALSO_ACCEPTED.get(fmt, ()))]))


def conversion_path(source_format: str, accepted: tuple[str, ...]) -> str | None:
    """The format an objective will receive for a source, or None if it cannot take it."""
    accepted = accepted_formats(accepted)
    if source_format in accepted:
        return source_format
    for target in accepted:
        if (source_format, target) in CONVERSIONS:
            return target
    return None
