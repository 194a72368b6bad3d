"""The four data formats: one documented schema each, row validation, and conversions.

| format       | fields                                   | example file                      |
| ------------ | ---------------------------------------- | --------------------------------- |
| `messages`   | messages: [{role, content}, ...]         | data/examples/messages.jsonl      |
| `preference` | prompt, chosen, rejected                 | data/examples/preference*.jsonl   |
| `feedback`   | prompt, completion, label (true/false)   | data/examples/feedback.jsonl      |
| `documents`  | text                                     | data/examples/documents.jsonl     |

prompt / chosen / rejected / completion are either plain strings ("standard") or lists of
chat messages ("conversational"); TRL applies the tokenizer's chat template to the latter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

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
    "documents": DataFormat("documents", ("text",), ()),
}


def infer_format(columns: list[str]) -> str | None:
    """The format whose fields are all present, most specific first."""
    for name in ("preference", "feedback", "messages", "documents"):
        if all(f in columns for f in FORMATS[name].fields):
            return name
    return None


def _normalise_messages(value: Any, field: str, allow_empty: bool = False) -> list[dict[str, str]]:
    """A chat turn list reduced to {role, content}; raises ValueError naming what is wrong."""
    if not isinstance(value, list) or (not value and not allow_empty):
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


def _label(row: dict) -> bool:
    if "label" not in row or row["label"] is None:
        raise ValueError("missing 'label'")
    value = row["label"]
    if not isinstance(value, bool):
        raise ValueError(f"'label' is {value!r}; expected true or false")
    return value


def _check_same_kind(row: dict, fields: tuple[str, ...]) -> None:
    kinds = {f: isinstance(row[f], list) for f in fields}
    if len(set(kinds.values())) > 1:
        raise ValueError(
            "mixes plain strings and message lists: "
            + ", ".join(f"'{f}' is {'messages' if v else 'a string'}" for f, v in kinds.items())
        )


def normalise_row(fmt: str, row: dict) -> dict:
    """The row reduced to its format's fields, validated; raises ValueError saying what is wrong."""
    if fmt == "messages":
        messages = _normalise_messages(row.get("messages"), "messages")
        if not any(t["role"] == "assistant" for t in messages):
            raise ValueError("'messages' has no assistant turn to learn from")
        return {"messages": messages}
    if fmt == "documents":
        text = row.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ValueError("'text' must be a non-empty string")
        return {"text": text}
    spec = FORMATS[fmt]
    out = {f: _text_or_messages(row, f) for f in spec.text_fields}
    _check_same_kind(out, spec.text_fields)
    if fmt == "preference" and out["chosen"] == out["rejected"]:
        raise ValueError("'chosen' and 'rejected' are identical")
    if fmt == "feedback":
        out["label"] = _label(row)
    return out


def is_conversational(row: dict) -> bool:
    return any(isinstance(v, list) for v in row.values())


# --------------------------------------------------------------------------- conversions


def preference_to_feedback(row: dict) -> list[dict]:
    """A pair becomes two unpaired rows: chosen is desirable, rejected is undesirable."""
    return [
        {"prompt": row["prompt"], "completion": row["chosen"], "label": True},
        {"prompt": row["prompt"], "completion": row["rejected"], "label": False},
    ]


CONVERSIONS: dict[tuple[str, str], Callable[[dict], list[dict]]] = {
    ("preference", "feedback"): preference_to_feedback,
}


def conversion_path(source_format: str, accepted: tuple[str, ...]) -> str | None:
    """The format an objective will receive for a source, or None if it cannot take it."""
    if source_format in accepted:
        return source_format
    for target in accepted:
        if (source_format, target) in CONVERSIONS:
            return target
    return None
