"""Sources into one training set: held-out split, weights, conversion to the objective's format.

Order matters and is fixed: each source is split into train / held-out *before* weighting
(an oversampled row never leaks into the held-out set) and *before* conversion (both halves
of a preference pair converted for KTO stay on the same side).

Your data replaces ours: sources marked ``fallback: true`` (the bundled example sets of the
``tiny_*`` data groups) train only when no other training source is configured. A recipe or
command line that names a source of its own trains on its sources alone; the example sets it
displaces are listed in the report (``set_aside``).

Everything stays in Arrow: splits, weights and the final shuffle are index selections, the
conversion is a batched map. A source with ``streaming: true`` (streaming.py) makes the training
set a stream that draws from every source by weight. On a multi-process launch the main process of
each node reads and validates first; the others then find every step in the `datasets` cache.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from align_train import console
from align_train.data.formats import CONVERSIONS, FORMATS, accepted_formats, conversion_path, features_for
from align_train.data.sources import SourceRows, read_source
from align_train.data.streaming import interleave, read_stream
from align_train.errors import ConfigError, DataError


@dataclass
class DataBundle:
    """What an objective trains and is evaluated on, and how it was assembled."""

    format: str  # the format the objective receives
    train: object  # datasets.Dataset
    eval: object | None
    heldout: dict[str, list[dict]] = field(default_factory=dict)  # held-out rows before conversion, by format
    report: dict = field(default_factory=dict)


def node_main_first(fn):
    """``fn()`` on each node's main process first, then on the others (which read what it cached).

    Unlike a bare ``main_process_first``, the barrier is reached even when the main process fails,
    so the other processes do not wait for it forever: they run ``fn`` too and fail the same way.
    """
    from align_train.distributed import process_state

    state = process_state()
    if state.num_processes == 1:
        return fn()
    if not state.is_local_main_process:
        state.wait_for_everyone()
    try:
        return fn()
    finally:
        if state.is_local_main_process:
            state.wait_for_everyone()


def training_sources(data_cfg) -> tuple[dict, dict]:
    """(the sources that train, the fallback sources set aside because others are configured)."""
    own = {name: s for name, s in data_cfg.train.items() if not getattr(s, "fallback", False)}
    if own and len(own) < len(data_cfg.train):
        return own, {name: s for name, s in data_cfg.train.items() if name not in own}
    return dict(data_cfg.train), {}


def _weighted(indices: np.ndarray, weight: float, rng: np.random.Generator) -> np.ndarray:
    """``weight`` x the rows: whole repeats, then a random sample for the fraction left."""
    whole, fraction = divmod(weight, 1.0)
    sample = rng.choice(indices, size=round(len(indices) * fraction), replace=False)
    return np.concatenate([np.tile(indices, int(whole)), sample]).astype(np.int64)


def _convert(dataset, source_format: str, target: str, conversational: bool):
    if source_format == target:
        return dataset
    converted = CONVERSIONS[(source_format, target)](dataset)
    return converted.cast(features_for(target, conversational))


def _target_format(key: str, src: SourceRows, accepted: tuple[str, ...], objective: str) -> str:
    target = conversion_path(src.format, accepted)
    if target is None:
        raise DataError(
            f"{key}: the objective '{objective}' trains on {' or '.join(accepted_formats(accepted))} data "
            f"(or data convertible to it), but this source is '{src.format}' "
            f"(fields: {', '.join(FORMATS[src.format].fields)}; layout '{src.layout}')"
        )
    return target


def _source_report(source, src: SourceRows, target: str) -> dict:
    return {
        "path": source.path,
        "layout": src.layout,
        "format": src.format,
        "converted_to": target,
        "rows": src.total_rows,
        "valid_rows": len(src.dataset),
        "skipped_rows": len(src.skipped),
        "skipped_examples": src.skipped[:20],
    }


def _check_one_kind(parts: dict[str, tuple[object, bool]]) -> None:
    """All sources conversational or all standard: the two cannot share one dataset."""
    kinds = {name: conversational for name, (dataset, conversational) in parts.items() if len(dataset)}
    if len(set(kinds.values())) > 1:
        desc = ", ".join(f"'{n}' is {'conversational' if c else 'standard (plain strings)'}" for n, c in kinds.items())
        raise DataError(f"data sources cannot be mixed: {desc}")


def _concatenate(parts: list):
    from datasets import concatenate_datasets

    return parts[0] if len(parts) == 1 else concatenate_datasets(parts)


def load_data(data_cfg, accepted: tuple[str, ...], objective: str) -> DataBundle:
    """Read, validate, split, weight and convert every configured source (each node's main process first)."""
    return node_main_first(lambda: _load_data(data_cfg, accepted, objective))


def _load_data(data_cfg, accepted: tuple[str, ...], objective: str) -> DataBundle:
    if not data_cfg.train:
        raise ConfigError("data.train: no data sources configured")
    if not 0.0 <= data_cfg.eval_fraction < 1.0:
        raise ConfigError(f"data.eval_fraction must be in [0, 1), got {data_cfg.eval_fraction}")
    mirror = getattr(data_cfg, "hub_mirror", None)
    rng = np.random.default_rng(data_cfg.seed)
    report: dict = {"sources": {}}
    sources, set_aside = training_sources(data_cfg)
    if set_aside:
        report["set_aside"] = {name: {"path": s.path, "why": "bundled fallback data; other training sources are "
                                      f"configured ({', '.join(f'data.train.{n}' for n in sources)})"}
                               for name, s in set_aside.items()}
        console.log(f"{', '.join(f'data.train.{n}' for n in set_aside)} (bundled example data) set aside: "
                    f"training on {', '.join(f'data.train.{n}' for n in sources)} only", topic="data")
    train_parts: dict[str, tuple[object, bool]] = {}
    held_parts: dict[str, tuple[str, str, bool, object]] = {}  # key -> (source format, target, conversational, rows)
    targets: dict[str, str] = {}
    # With a streamed source the mixture is a stream too, and weights are each source's share of the rows drawn.
    streaming = any(source.streaming for source in sources.values())
    weights = {f"data.train.{name}": source.weight for name, source in sources.items()}
    total_weight = sum(weights.values())
    streams: dict[str, object] = {}

    for name, source in sources.items():
        key = f"data.train.{name}"
        if not source.weight > 0 or source.weight == float("inf"):  # NaN fails the first test
            raise ConfigError(f"{key}.weight must be > 0 and finite, got {source.weight}")
        if source.streaming:
            stream = read_stream(key, source, data_cfg.skip_invalid_rows, mirror, data_cfg.seed)
            targets[key] = "documents"
            streams[key] = stream.dataset
            report["sources"][name] = {"path": source.path, "layout": stream.layout, "format": "documents",
                                       "converted_to": "documents", "streamed": True, "weight": source.weight,
                                       "share": source.weight / total_weight, "rows": None, "valid_rows": None,
                                       "train_rows": None, "heldout_rows": 0, "skipped_rows": None}
            continue
        src = read_source(key, source, data_cfg.skip_invalid_rows, mirror)
        targets[key] = _target_format(key, src, accepted, objective)
        conversational = src.conversational
        indices = np.arange(len(src.dataset), dtype=np.int64)
        held = indices[:0]
        if not data_cfg.eval and data_cfg.eval_fraction > 0:
            indices = rng.permutation(indices)
            n_held = math.ceil(len(indices) * data_cfg.eval_fraction)
            if n_held >= len(indices):
                raise DataError(f"{key}: {len(indices)} rows leave nothing to train on after holding out {n_held}")
            held, indices = indices[:n_held], indices[n_held:]
        train_indices = rng.permutation(indices) if streaming else _weighted(indices, source.weight, rng)
        if not len(train_indices):
            raise ConfigError(f"{key}.weight={source.weight} keeps none of the source's {len(indices)} training rows; "
                              f"use at least {1 / len(indices):.2g} or leave the source out")
        part = _convert(src.dataset.select(train_indices), src.format, targets[key], conversational)
        train_parts[key] = (part, conversational)
        if len(held):
            held_parts[key] = (src.format, targets[key], conversational, src.dataset.select(held))
        report["sources"][name] = {
            **_source_report(source, src, targets[key]),
            "weight": source.weight,
            "train_rows": len(part),
            "heldout_rows": len(held),
            **({"share": source.weight / total_weight} if streaming else {}),
        }

    for name, source in data_cfg.eval.items():
        key = f"data.eval.{name}"
        src = read_source(key, source, data_cfg.skip_invalid_rows, mirror)
        targets[key] = _target_format(key, src, accepted, objective)
        held_parts[key] = (src.format, targets[key], src.conversational, src.dataset)
        report["sources"][f"eval/{name}"] = _source_report(source, src, targets[key])

    if len(set(targets.values())) > 1:
        raise DataError(
            "data sources give different formats to the objective and cannot be mixed: "
            + ", ".join(f"{k} -> {v}" for k, v in targets.items())
        )
    # Cap the held-out set in source rows, before conversion: a converted pair is never cut in half,
    # and the trainer's eval set and the summary's held-out rows are the same examples.
    budget = data_cfg.max_eval_rows
    eval_parts: dict[str, tuple[object, bool]] = {}
    heldout: dict[str, list[dict]] = {}
    for key, (source_format, target, conversational, rows) in held_parts.items():
        if budget is not None:
            keep = min(budget, len(rows))
            rows, budget = rows.select(range(keep)), budget - keep
        if len(rows):
            eval_parts[key] = (_convert(rows, source_format, target, conversational), conversational)
            heldout.setdefault(source_format, []).extend(rows.to_list())
    _check_one_kind({**train_parts, **eval_parts})

    if streaming:  # in-memory parts are already shuffled; each stream shuffles in its buffer
        parts = {**{key: part for key, (part, _) in train_parts.items()}, **streams}
        train = interleave({key: (part, weights[key]) for key, part in parts.items()}, data_cfg.seed)
    else:
        train = _concatenate([part for part, _ in train_parts.values()])
        train = train.select(rng.permutation(len(train)))
    evaluation = _concatenate([part for part, _ in eval_parts.values()]) if eval_parts else None
    fmt = next(iter(targets.values()))
    report.update(
        format=fmt,
        train_rows=None if streaming else len(train),
        eval_rows=len(evaluation) if evaluation is not None else 0,
        skipped_rows=sum(s["skipped_rows"] or 0 for s in report["sources"].values()),
        **({"streamed": True} if streaming else {}),
    )
    return DataBundle(format=fmt, train=train, eval=evaluation, heldout=heldout, report=report)
