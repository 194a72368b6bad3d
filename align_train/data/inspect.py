"""What ``align-data inspect`` and ``align-data convert`` do: look at a source as a run would read it, or write it
out in its normalised form.

Both read the source exactly as a training run does (``read_source``: the same layouts, detection, validation
and messages), so what ``inspect`` reports is what a run would meet, and what ``convert`` writes loads again as
the same rows.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

from omegaconf import MISSING

from align_train.data.formats import CONVERSIONS, FORMATS, LAYOUTS, features_for, known_settings
from align_train.data.sources import read_source
from align_train.errors import ConfigError, DataError
from align_train.paths import DATA_DIR

DEFAULT_TOKENIZER = str(DATA_DIR / "tiny-llama")
PERCENTILES = (50, 90, 99, 100)


@dataclass
class SourceArgs:
    """A source named on the command line: the fields of a data source (``data.train.NAME``)."""

    source: str = MISSING  # file, directory (plain or in hub layout) or hub dataset name
    format: Optional[str] = None  # a layout or a format; detected from the columns when not set
    split: str = "train"
    subset: Optional[str] = None
    columns: Dict[str, str] = field(default_factory=dict)
    hub_mirror: Optional[str] = None  # as data.hub_mirror


@dataclass
class InspectArgs(SourceArgs):
    tokenizer: str = DEFAULT_TOKENIZER  # the token lengths and the rendered example use its chat template
    max_length: int = 1024  # rows longer than this (prompt and answer, in tokens) are counted as a problem
    sample: int = 10_000  # token lengths are measured on a seeded sample of this many valid rows
    max_problems: int = 50  # problems printed (all are counted)


@dataclass
class ConvertArgs(SourceArgs):
    out: str = MISSING  # the normalised JSON Lines file to write
    to: Optional[str] = None  # convert to this format as well (preference -> feedback)
    skip_invalid_rows: bool = False  # write the valid rows and list the others, instead of refusing


def _source_config(args: SourceArgs):
    from align_train.config import SourceConfig

    if args.format is not None and args.format not in known_settings():
        raise ConfigError(f"format={args.format} is unknown; expected one of {', '.join(known_settings())}")
    return SourceConfig(path=args.source, format=args.format, split=args.split, subset=args.subset,
                        columns=dict(args.columns))


def _read(args: SourceArgs, collect: bool, skip: bool = False):
    return read_source(f"align-data {args.source}", _source_config(args), skip, args.hub_mirror, collect=collect)


# --------------------------------------------------------------------------- inspect


def _texts(fmt: str, row: dict, tokenizer) -> dict[str, str]:
    """The texts a trainer tokenises for one row, rendered through the chat template when conversational."""

    def render(conversation, prompt_only=False) -> str:
        if isinstance(conversation, str):
            return conversation
        return tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=prompt_only)

    def joined(prompt, answer) -> str:
        return render(prompt + answer) if isinstance(prompt, list) else prompt + answer

    if fmt == "messages":
        return {"messages": render(row["messages"])}
    if fmt == "documents":
        return {"text": row["text"]}
    if fmt == "preference":
        return {"prompt": render(row["prompt"], prompt_only=True),
                "prompt+chosen": joined(row["prompt"], row["chosen"]),
                "prompt+rejected": joined(row["prompt"], row["rejected"])}
    return {"prompt": render(row["prompt"], prompt_only=True),
            "prompt+completion": joined(row["prompt"], row["completion"])}


def _percentile(sorted_values: list[int], q: int) -> int:
    if not sorted_values:
        return 0
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


def token_lengths(fmt: str, rows: list[dict], tokenizer) -> dict[str, dict[str, int]]:
    """Per text a trainer tokenises: p50 / p90 / p99 / max token counts over ``rows``."""
    lengths: dict[str, list[int]] = {}
    for row in rows:
        for name, text in _texts(fmt, row, tokenizer).items():
            lengths.setdefault(name, []).append(len(tokenizer(text, add_special_tokens=False)["input_ids"]))
    return {name: {("max" if q == 100 else f"p{q}"): _percentile(sorted(values), q) for q in PERCENTILES}
            for name, values in lengths.items()}


def inspect_source(args: InspectArgs) -> dict:
    """Everything ``align-data inspect`` prints, as a dict: format, counts, token lengths, an example, problems."""
    from transformers import AutoTokenizer

    src = _read(args, collect=True)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    conversational = src.conversational if len(src.dataset) else None
    problems = list(src.skipped)
    notes: list[str] = []
    sample_rows: list[dict] = []
    if len(src.dataset):
        picked = sorted(random.Random(0).sample(range(len(src.dataset)), min(args.sample, len(src.dataset))))
        sample_rows = src.dataset.select(picked).to_list()
        if len(picked) < len(src.dataset):
            notes.append(f"token lengths from a seeded sample of {len(picked)} of {len(src.dataset)} valid rows")
    if conversational and not tokenizer.chat_template:
        problems.append(f"the rows are conversational but the tokenizer {args.tokenizer} has no chat template: "
                        "a run needs model.chat_template or a chat model's tokenizer")
        lengths, example = {}, None
    else:
        lengths = token_lengths(src.format, sample_rows, tokenizer)
        example = _texts(src.format, sample_rows[0], tokenizer) if sample_rows else None
        too_long = sum(1 for row in sample_rows
                       if max(len(tokenizer(t, add_special_tokens=False)["input_ids"])
                              for t in _texts(src.format, row, tokenizer).values()) > args.max_length)
        if too_long:
            problems.append(f"{too_long} of {len(sample_rows)} rows inspected are longer than max_length="
                            f"{args.max_length} tokens (a run truncates them, or drops a row whose prompt alone "
                            "fills model.max_length)")
    if src.format == "feedback" and sample_rows:
        desirable = sum(1 for row in sample_rows if row["label"])
        if desirable in (0, len(sample_rows)):
            problems.append(f"every label is {bool(desirable)}: KTO and BCO need desirable and undesirable rows")
        notes.append(f"labels: {desirable} desirable, {len(sample_rows) - desirable} undesirable (of those inspected)")
    return {
        "source": args.source, "layout": src.layout, "format": src.format,
        "conversational": conversational, "rows": src.total_rows, "valid_rows": len(src.dataset),
        "invalid_rows": len(src.skipped), "token_lengths": lengths, "tokenizer": args.tokenizer,
        "example": example, "problems": problems, "notes": notes,
    }


def render_inspection(found: dict, max_problems: int) -> str:
    layout = LAYOUTS[found["layout"]]
    kind = {True: "conversational", False: "standard (plain strings)", None: "-"}[found["conversational"]]
    lines = [
        f"source       {found['source']}",
        f"layout       {found['layout']} ({', '.join(layout.columns)}; e.g. {layout.example})",
        f"format       {found['format']} ({', '.join(FORMATS[found['format']].fields)}), {kind}",
        f"rows         {found['rows']} read, {found['valid_rows']} valid, {found['invalid_rows']} invalid",
    ]
    if found["token_lengths"]:
        lines.append(f"tokens       under {found['tokenizer']}")
        for name, stats in found["token_lengths"].items():
            lines.append(f"  {name:<18} " + "  ".join(f"{k} {v}" for k, v in stats.items()))
    for note in found["notes"]:
        lines.append(f"note         {note}")
    if found["example"]:
        lines.append("example      the first inspected row, as the trainer renders it:")
        for name, text in found["example"].items():
            lines.append(f"--- {name}")
            lines.append(text)
        lines.append("---")
    problems = found["problems"]
    lines.append(f"problems     {len(problems) or 'none'}")
    lines += [f"  {p}" for p in problems[:max_problems]]
    if len(problems) > max_problems:
        lines.append(f"  ... and {len(problems) - max_problems} more (max_problems=...)")
    return "\n".join(lines)


# --------------------------------------------------------------------------- convert


def convert_source(args: ConvertArgs) -> dict:
    """Write the source's valid rows, normalised (and converted with ``to``), as JSON Lines; returns the counts.

    Invalid rows are an error naming each, unless ``skip_invalid_rows``: then they are listed and left out.
    The file is written beside its destination and moved into place, so a failure leaves nothing half-written.
    """
    src = _read(args, collect=False, skip=args.skip_invalid_rows)
    dataset, fmt = src.dataset, src.format
    if args.to is not None and args.to != fmt:
        if (fmt, args.to) not in CONVERSIONS:
            raise ConfigError(f"to={args.to}: {fmt} data cannot be converted to it; conversions: "
                              + ", ".join(f"{a} -> {b}" for a, b in CONVERSIONS))
        dataset = CONVERSIONS[(fmt, args.to)](dataset).cast(features_for(args.to, src.conversational))
        fmt = args.to
    out = Path(args.out).expanduser()
    if out.suffix != ".jsonl":
        raise ConfigError(f"out={args.out}: the normalised file is JSON Lines; name it *.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    try:
        dataset.to_json(str(partial), lines=True, force_ascii=False)
        partial.replace(out)
    except OSError as err:
        partial.unlink(missing_ok=True)
        raise DataError(f"out={out}: cannot write it: {err}") from None
    return {"out": str(out), "layout": src.layout, "format": fmt, "rows": src.total_rows,
            "written": len(dataset), "skipped": src.skipped}
