"""The model-spec file: principles, each with a statement, the rationale behind it, and examples.

YAML, because a spec is prose with a little structure. Every check names the file and the
field (``spec.yaml: principles[1].rationale is empty``) so a bad spec costs seconds.

    name: my-spec
    description: optional, one paragraph
    principles:
      - id: privacy                       # unique, [a-z0-9_-]
        title: Respect people's privacy
        statement: The assistant does not reveal personal information about people.
        rationale: People have a right to control information about themselves...
        examples:                          # at least one: concrete situations
          - Asked for a neighbour's phone number, the assistant declines and suggests asking them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from align_train.errors import DataError

ID = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
TEXT_FIELDS = ("title", "statement", "rationale")


class SpecError(DataError):
    """A spec file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class Principle:
    id: str
    title: str
    statement: str
    rationale: str
    examples: tuple[str, ...]


@dataclass(frozen=True)
class Spec:
    name: str
    principles: tuple[Principle, ...]
    description: str = ""
    path: str = ""
    extra: dict = field(default_factory=dict)


def _text(value, where: str) -> str:
    if not isinstance(value, str):
        raise SpecError(f"{where} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise SpecError(f"{where} is empty")
    return " ".join(value.split())


def parse_spec(content: dict, source: str = "<spec>") -> Spec:
    """Validate a loaded spec mapping; ``source`` is the file name used in error messages."""
    if not isinstance(content, dict):
        raise SpecError(f"{source}: the spec must be a mapping with 'name' and 'principles'")
    unknown = sorted(set(content) - {"name", "description", "principles"})
    if unknown:
        raise SpecError(f"{source}: unknown field(s) {unknown}; expected name, description, principles")
    name = _text(content.get("name", Path(source).stem), f"{source}: name")
    principles = content.get("principles")
    if principles is None:
        raise SpecError(f"{source}: principles is missing (a list of principles)")
    if not isinstance(principles, list) or not principles:
        raise SpecError(f"{source}: principles must be a non-empty list")
    parsed, seen = [], set()
    for i, item in enumerate(principles):
        where = f"{source}: principles[{i}]"
        if not isinstance(item, dict):
            raise SpecError(f"{where} must be a mapping with id, title, statement, rationale, examples")
        unknown = sorted(set(item) - {"id", "examples", *TEXT_FIELDS})
        if unknown:
            raise SpecError(f"{where}: unknown field(s) {unknown}")
        for key in ("id", *TEXT_FIELDS, "examples"):
            if key not in item:
                raise SpecError(f"{where}.{key} is missing")
        pid = _text(item["id"], f"{where}.id")
        if not ID.match(pid):
            raise SpecError(f"{where}.id '{pid}' must be lower-case letters, digits, '-' or '_'")
        if pid in seen:
            raise SpecError(f"{where}.id '{pid}' is used twice")
        seen.add(pid)
        examples = item["examples"]
        if not isinstance(examples, list) or not examples:
            raise SpecError(f"{where}.examples must be a non-empty list of strings")
        parsed.append(Principle(
            id=pid,
            **{key: _text(item[key], f"{where}.{key}") for key in TEXT_FIELDS},
            examples=tuple(_text(e, f"{where}.examples[{j}]") for j, e in enumerate(examples)),
        ))
    description = content.get("description") or ""
    return Spec(name=name, principles=tuple(parsed), description=" ".join(str(description).split()), path=source)


def load_spec(path: str | Path) -> Spec:
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec file '{path}' does not exist")
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: not valid YAML: {err}") from err
    return parse_spec(content, str(path))
