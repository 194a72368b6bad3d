"""Sources into one training set: held-out split, weights, conversion to the objective's format.

Order matters and is fixed: each source is split into train / held-out *before* weighting
(an oversampled row never leaks into the held-out set) and *before* conversion (both halves
of a preference pair converted for KTO stay on the same side).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from datasets import Dataset

from align_train.data.formats import CONVERSIONS, FORMATS, conversion_path, is_conversational
from align_train.data.sources import SourceRows, read_source
from align_train.errors import ConfigError, DataError


@dataclass
class DataBundle:
    """What an objective trains and is evaluated on, and how it was assembled."""

    format: str  # the format the objective receives
    train: Dataset
    eval: Dataset | None
    heldout: dict[str, list[dict]] = field(default_factory=dict)  # held-out rows before conversion, by format
    report: dict = field(default_factory=dict)


def _weighted(rows: list[dict], weight: float, rng: random.Random) -> list[dict]:
    """``weight`` x the rows: whole repeats, then a random sample for the fraction left."""
    whole, fraction = divmod(weight, 1.0)
    out = rows * int(whole)
    out += rng.sample(rows, round(len(rows) * fraction))
    return out


def _convert(rows: list[dict], source_format: str, target: str) -> list[dict]:
    if source_format == target:
        return rows
    convert = CONVERSIONS[(source_format, target)]
    return [new for row in rows for new in convert(row)]


def _target_format(key: str, src: SourceRows, accepted: tuple[str, ...], objective: str) -> str:
    target = conversion_path(src.format, accepted)
    if target is None:
        raise DataError(
            f"{key}: the objective '{objective}' trains on {' or '.join(accepted)} data "
            f"(or data convertible to it), but this source is '{src.format}' "
            f"(fields: {', '.join(FORMATS[src.format].fields)})"
        )
    return target


def _source_report(source, src: SourceRows, target: str) -> dict:
    return {
        "path": source.path,
        "format": src.format,
        "converted_to": target,
        "valid_rows": len(src.rows),
        "skipped_rows": len(src.skipped),
        "skipped_examples": src.skipped[:20],
    }


def _check_one_kind(parts: dict[str, list[dict]]) -> None:
    """All sources conversational or all standard: the two cannot share one dataset."""
    kinds = {name: is_conversational(rows[0]) for name, rows in parts.items() if rows}
    if len(set(kinds.values())) > 1:
        desc = ", ".join(f"'{n}' is {'conversational' if c else 'standard (plain strings)'}" for n, c in kinds.items())
        raise DataError(f"data sources cannot be mixed: {desc}")


def load_data(data_cfg, accepted: tuple[str, ...], objective: str) -> DataBundle:
    """Read, validate, split, weight and convert every configured source."""
    if not data_cfg.train:
        raise ConfigError("data.train: no data sources configured")
    if not 0.0 <= data_cfg.eval_fraction < 1.0:
        raise ConfigError(f"data.eval_fraction must be in [0, 1), got {data_cfg.eval_fraction}")
    rng = random.Random(data_cfg.seed)
    report: dict = {"sources": {}}
    train_parts: dict[str, list[dict]] = {}
    held_parts: dict[str, tuple[str, str, list[dict]]] = {}  # config key -> (source format, target, rows)
    targets: dict[str, str] = {}

    for name, source in data_cfg.train.items():
        key = f"data.train.{name}"
        if not source.weight > 0 or source.weight == float("inf"):  # NaN fails the first test
            raise ConfigError(f"{key}.weight must be > 0 and finite, got {source.weight}")
        src = read_source(key, source, data_cfg.skip_invalid_rows)
        targets[key] = _target_format(key, src, accepted, objective)
        rows = list(src.rows)
        held: list[dict] = []
        if not data_cfg.eval and data_cfg.eval_fraction > 0:
            rng.shuffle(rows)
            n_held = math.ceil(len(rows) * data_cfg.eval_fraction)
            if n_held >= len(rows):
                raise DataError(f"{key}: {len(rows)} rows leave nothing to train on after holding out {n_held}")
            held, rows = rows[:n_held], rows[n_held:]
        train_rows = _weighted(rows, source.weight, rng)
        if not train_rows:
            raise ConfigError(f"{key}.weight={source.weight} keeps none of the source's {len(rows)} training rows; "
                              f"use at least {1 / len(rows):.2g} or leave the source out")
        train_parts[key] = _convert(train_rows, src.format, targets[key])
        if held:
            held_parts[key] = (src.format, targets[key], held)
        report["sources"][name] = {
            **_source_report(source, src, targets[key]),
            "weight": source.weight,
            "train_rows": len(train_parts[key]),
            "heldout_rows": len(held),
        }

    for name, source in data_cfg.eval.items():
        key = f"data.eval.{name}"
        src = read_source(key, source, data_cfg.skip_invalid_rows)
        targets[key] = _target_format(key, src, accepted, objective)
        held_parts[key] = (src.format, targets[key], src.rows)
        report["sources"][f"eval/{name}"] = _source_report(source, src, targets[key])

    if len(set(targets.values())) > 1:
        raise DataError(
            "data sources give different formats to the objective and cannot be mixed: "
            + ", ".join(f"{k} -> {v}" for k, v in targets.items())
        )
    # Cap the held-out set in source rows, before conversion: a converted pair is never cut in half,
    # and the trainer's eval set and the summary's held-out rows are the same examples.
    budget = data_cfg.max_eval_rows
    eval_parts: dict[str, list[dict]] = {}
    heldout: dict[str, list[dict]] = {}
    for key, (source_format, target, rows) in held_parts.items():
        if budget is not None:
            rows, budget = rows[:budget], budget - min(budget, len(rows))
        if rows:
            eval_parts[key] = _convert(rows, source_format, target)
            heldout.setdefault(source_format, []).extend(rows)
    _check_one_kind({**train_parts, **eval_parts})

    train_rows = [row for rows in train_parts.values() for row in rows]
    rng.shuffle(train_rows)
    eval_rows = [row for rows in eval_parts.values() for row in rows]
    fmt = next(iter(targets.values()))
    report.update(
        format=fmt,
        train_rows=len(train_rows),
        eval_rows=len(eval_rows),
        skipped_rows=sum(s["skipped_rows"] for s in report["sources"].values()),
    )
    return DataBundle(
        format=fmt,
        train=Dataset.from_list(train_rows),
        eval=Dataset.from_list(eval_rows) if eval_rows else None,
        heldout=heldout,
        report=report,
    )
