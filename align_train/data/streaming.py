"""Streamed sources: a document corpus read as training reaches it, never converted or cached ahead.

Midtraining mixes a general corpus into the spec documents to limit forgetting, and such corpora
run to billions of tokens: more than an Arrow conversion or a disk cache should hold. A source
with ``streaming: true`` is read through `datasets`' IterableDataset (local files by its packaged
readers, hub datasets and directories in the hub's layout by ``load_dataset``), shuffled in a
seeded buffer, and validated row by row as it arrives: an invalid row stops training naming the
source and the row, or is skipped with ``data.skip_invalid_rows``. Its first row is read before
anything loads, so a wrong layout or an unreadable file is an error at the start.

When one source streams the mixture streams too (mixture.py): each next document comes from
source i with probability ``weight_i / sum(weights)``, sources that run out start over until
every one has, and ``train.max_steps`` says when training ends (a stream has no length). Only
``documents`` stream, for ``objective=midtrain``; held-out rows come from the other sources or
``data.eval``, never from a stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from align_train.data.formats import choose_layout, features_for, infer_layout, normalise_row
from align_train.data.sources import FILE_TYPES, _files_of, _looks_local, _rename, hub_layout, mirrored
from align_train.errors import ConfigError, DataError

SHUFFLE_BUFFER = 10_000  # documents held for the streaming shuffle (datasets' buffer shuffle)
BUILDERS = {"jsonl": "json", "json": "json", "csv": "csv", "parquet": "parquet"}


@dataclass
class StreamedSource:
    """A source's documents as a stream (a datasets.IterableDataset of ``{"text": str}``)."""

    name: str
    label: str  # the file(s) or hub dataset it reads, for errors and the report
    layout: str
    dataset: object


def check_streaming(cfg) -> None:
    """Config checks for streamed sources, before anything loads."""
    streamed = [f"data.train.{name}" for name, source in cfg.data.train.items() if source.streaming]
    for name, source in cfg.data.eval.items():
        if source.streaming:
            raise ConfigError(f"data.eval.{name}.streaming=true: a held-out set is read whole (it is scored at every "
                              "evaluation); stream training sources only")
    if not streamed:
        return
    if cfg.objective.name != "midtrain":
        raise ConfigError(f"{streamed[0]}.streaming=true: streaming is for midtraining's document corpora; "
                          f"objective={cfg.objective.name} reads its data whole (set objective=midtrain or "
                          "streaming=false)")
    if cfg.train.max_steps <= 0:
        raise ConfigError(f"{streamed[0]}.streaming=true: a stream has no length, so train.max_steps must say when "
                          f"training ends (got {cfg.train.max_steps}, which means 'train num_epochs')")


def _open(key: str, source, mirror: str | None):
    """(IterableDataset, label) for the source's path: local file(s), a hub-layout directory, or a hub dataset."""
    import datasets

    path = Path(source.path).expanduser()
    if path.is_dir() and hub_layout(path):
        return _load(key, str(path), source, str(path)), f"{path}[{source.split}]"
    if path.exists():
        files = _files_of(path)
        if all(f.stat().st_size == 0 for f in files):
            raise DataError(f"data source '{key}' ({path}) has no rows")
        kinds = {BUILDERS[FILE_TYPES[f.suffix]] for f in files}
        if len(kinds) > 1:
            raise DataError(f"{key}.path: {path} mixes file types ({', '.join(sorted(f.suffix for f in files))}); "
                            "a streamed source reads one type")
        try:
            stream = datasets.load_dataset(kinds.pop(), data_files=[str(f) for f in files], split="train",
                                           streaming=True)
        except Exception as err:
            raise DataError(f"{key}.path: {path} cannot be streamed: {type(err).__name__}: {err}") from None
        return stream, str(path)
    if _looks_local(source.path):
        raise DataError(f"{key}.path: file or directory '{source.path}' does not exist")
    local = mirrored(key, source.path, mirror)
    label = f"{local if local is not None else source.path}[{source.split}]"
    return _load(key, str(local) if local is not None else source.path, source, label), label


def _load(key: str, name: str, source, label: str):
    import datasets

    try:
        return datasets.load_dataset(name, source.subset, split=source.split, streaming=True)
    except Exception as err:
        raise DataError(f"{key}.path: '{label}' cannot be streamed (subset={source.subset}, split={source.split}): "
                        f"{err}") from None


def _first_row(key: str, stream, label: str) -> dict:
    try:
        return next(iter(stream.take(1)))
    except StopIteration:
        raise DataError(f"data source '{key}' ({label}) has no rows") from None
    except Exception as err:  # the reader's own complaint: not JSON, a bad Parquet footer, ...
        raise DataError(f"{key}: {label} cannot be read: {err}") from None


def read_stream(key: str, source, skip_invalid_rows: bool, mirror: str | None, seed: int) -> StreamedSource:
    """The source as a shuffled stream of valid documents; its layout is checked on the first row, now."""
    stream, label = _open(key, source, mirror)
    columns = dict(source.columns)
    first = _rename(_first_row(key, stream, label), columns, f"{label} row 1")
    layout = choose_layout(source.format, list(first))
    if layout != "documents" or "text" not in first:
        detected = infer_layout(list(first))
        raise DataError(f"{key}.streaming=true: only documents (a 'text' column) stream, but {label} has columns "
                        f"{', '.join(first)}{f' (layout {detected!r})' if detected else ''}; map its text column "
                        f"with {key}.columns")
    if columns:
        stream = stream.rename_columns({old: new for old, new in columns.items() if old != new})
    stream = stream.select_columns(["text"])

    def problem(text) -> str | None:
        try:
            normalise_row("documents", {"text": text})
            return None
        except ValueError as err:
            return str(err)

    def check(batch: dict, indices: list[int]) -> dict:
        for text, index in zip(batch["text"], indices):
            why = problem(text)
            if why is not None:
                raise DataError(f"data source '{key}': {label} row {index + 1}: {why} (layout 'documents'; streamed, "
                                "so found during training). Fix it, or set data.skip_invalid_rows=true to skip such "
                                "rows")
        return batch

    features = features_for("documents", False)
    if skip_invalid_rows:
        stream = stream.filter(lambda row: problem(row["text"]) is None)
    else:
        stream = stream.map(check, batched=True, with_indices=True)
    stream = stream.cast(features) if stream.features is not None else stream.map(lambda row: row, features=features)
    return StreamedSource(name=key, label=label, layout=layout,
                          dataset=stream.shuffle(seed=seed, buffer_size=SHUFFLE_BUFFER))


def interleave(parts: dict[str, tuple[object, float]], seed: int):
    """One stream from the training sources ({key: (Dataset or IterableDataset, weight)}): a source drawn per row
    with probability weight / sum of weights; exhausted sources restart until each has been read through."""
    from datasets import interleave_datasets

    streams = [part if not hasattr(part, "to_iterable_dataset") else part.to_iterable_dataset()
               for part, _ in parts.values()]
    total = sum(weight for _, weight in parts.values())
    if len(streams) == 1:
        return streams[0]
    return interleave_datasets(streams, probabilities=[weight / total for _, weight in parts.values()], seed=seed,
                               stopping_strategy="all_exhausted")
