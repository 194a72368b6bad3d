"""Reading one data source into validated Arrow rows, with the file and row (or line) in every error.

Every source is read by `datasets` into Arrow and stays there: JSON Lines, CSV and Parquet files
through its packaged readers, hub datasets -- and local directories in the hub's layout (a
dataset card with ``configs``, or files named after their splits such as
``data/train-00000-of-00001.parquet``) -- through ``datasets.load_dataset``, exactly as the hub
is read. Rows are then validated and normalised to their format's schema by a batched
``Dataset.map`` (several processes for large sources). Both steps are cached by `datasets`, so a
source is read once per machine, and the rows are memory-mapped rather than held as Python
objects.

A file the Arrow readers refuse -- a line that is not JSON or not UTF-8, or a column that mixes
plain strings and message lists -- is read line by line in Python instead, which names the line
of every problem. ``.json`` files (one array) are read in Python too. Bad rows are an error that
lists them, unless ``data.skip_invalid_rows`` is set: then they are counted and reported.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from align_train.data import formats
from align_train.data.formats import (
    LAYOUTS,
    choose_layout,
    describe_layouts,
    features_for,
    has_conversations,
    infer_layout,
    is_conversational,
    is_list_feature,
    known_settings,
    layouts_for,
    normalise_row,
)
from align_train.errors import DataError

FILE_TYPES = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
MAX_ERRORS_SHOWN = 10
ERROR_COLUMN = "__align_train_error__"
BATCH = 1000
PARALLEL_FROM_ROWS = 100_000  # sources this large are validated by several processes
KIND = {True: "conversational (message lists)", False: "standard (plain strings)"}


def _code_version() -> str:
    """Cached validations are keyed by this: a changed rule never reuses an old result."""
    import trl

    digest = hashlib.sha256(trl.__version__.encode())
    for module in (formats.__file__, __file__, Path(__file__).with_name("vectorised.py")):
        digest.update(Path(module).read_bytes())
    return digest.hexdigest()[:16]


VERSION = _code_version()


@dataclass
class SourceRows:
    """A source's valid rows (its format's fields only) and what was skipped."""

    name: str
    format: str
    dataset: object  # datasets.Dataset with features_for(format, conversational)
    skipped: list[str] = field(default_factory=list)  # "file line N: reason"
    layout: str = ""
    total_rows: int = 0

    @property
    def rows(self) -> list[dict]:
        """The valid rows as Python dicts (materialises them: for small sets and tests)."""
        return self.dataset.to_list()

    @property
    def conversational(self) -> bool:
        return len(self.dataset) > 0 and has_conversations(self.dataset.features)


# --------------------------------------------------------------------------- files line by line


def _files_of(path: Path) -> list[Path]:
    if path.is_file():
        if path.suffix not in FILE_TYPES:
            raise DataError(f"{path}: unsupported file type '{path.suffix}'; expected one of {', '.join(FILE_TYPES)}")
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in FILE_TYPES)
    if not files:
        raise DataError(f"{path}: directory holds no data files ({', '.join(FILE_TYPES)})")
    return files


def decode_line(raw: bytes, path: Path, number: int) -> str:
    """One line of a text file as UTF-8; DataError names the file, the line and the byte that is not."""
    try:
        return raw.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path} line {number}: not UTF-8 text (byte {raw[err.start:err.start + 1]!r} at column "
                        f"{err.start + 1}); re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None


def read_jsonl(path: Path, bad_lines: list[str] | None = None) -> Iterator[tuple[str, dict]]:
    """(where, row) for every non-blank line: "FILE line N" and its JSON object.

    A line that is not UTF-8, not JSON or not an object raises DataError naming the file and the
    line, or, when ``bad_lines`` is given, is recorded there ("FILE line N: reason") and skipped.
    """
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = decode_line(raw, path, number)
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(f"{path} line {number}: not valid JSON ({err.msg} at column {err.colno})") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path} line {number}: expected a JSON object, got {type(row).__name__}")
            except DataError as err:
                if bad_lines is None:
                    raise
                bad_lines.append(str(err))
                continue
            yield f"{path} line {number}", row


def check_utf8(path: Path) -> None:
    """A text file (CSV, JSON) read by a library that would only say "utf-8 codec can't decode": name the line."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            decode_line(raw, path, number)


def _read_json(path: Path) -> Iterator[tuple[str, dict]]:
    check_utf8(path)
    try:
        content = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(content, list):
        raise DataError(f"{path}: expected a JSON array of objects (or use .jsonl, one object per line)")
    for index, row in enumerate(content, start=1):
        if not isinstance(row, dict):
            raise DataError(f"{path} row {index}: expected an object, got {type(row).__name__}")
        yield f"{path} row {index}", row


def _read_with_datasets(path: Path, kind: str) -> Iterator[tuple[str, dict]]:
    import datasets

    if kind == "csv":
        check_utf8(path)
    try:
        table = datasets.load_dataset(kind, data_files=str(path), split="train")
    except Exception as err:  # datasets raises many types for unreadable files
        raise DataError(f"{path}: cannot be read as {kind}: {err}") from None
    for index, row in enumerate(table, start=1):
        yield f"{path} row {index}", row


def _read_file(path: Path, bad_lines: list[str] | None = None) -> Iterator[tuple[str, dict]]:
    kind = FILE_TYPES[path.suffix]
    if kind == "jsonl":
        return read_jsonl(path, bad_lines)
    if kind == "json":
        return _read_json(path)
    return _read_with_datasets(path, kind)


# --------------------------------------------------------------------------- where a source is


def _looks_local(path: str) -> bool:
    return path.startswith((".", "/", "~")) or Path(path).suffix in FILE_TYPES


def hub_layout(path: Path) -> bool:
    """Whether a directory is laid out as a hub dataset: a card with ``configs``, or files named after splits."""
    readme = path / "README.md"
    if readme.is_file() and re.match(r"---\s*\n.*?^configs\s*:", readme.read_text(errors="replace"), re.S | re.M):
        return True
    from datasets.data_files import get_data_patterns

    try:
        patterns = get_data_patterns(str(path))
    except Exception:  # no data files at all
        return False
    return {str(split): list(p) for split, p in patterns.items()} != {"train": ["**"]}


def mirrored(key: str, name: str, mirror: str | None) -> Path | None:
    """The local copy of hub dataset ``name`` under ``data.hub_mirror`` (``MIRROR/owner/name``), when one is set."""
    if not mirror:
        return None
    local = Path(mirror).expanduser() / name
    if not local.is_dir():
        raise DataError(f"{key}.path: '{name}' is not in data.hub_mirror: expected a directory {local} holding the "
                        "dataset's files in their hub layout (e.g. data/train-00000-of-00001.parquet, or the dataset "
                        "card with its 'configs'), as `huggingface-cli download --repo-type dataset` writes them")
    return local


def _load_hub(key: str, name: str, subset: str | None, split: str, local: Path | None = None):
    """A hub dataset's split, or that of a local directory in the hub's layout, through datasets.load_dataset."""
    import datasets

    try:
        return datasets.load_dataset(str(local) if local is not None else name, subset, split=split)
    except Exception as err:
        if local is not None:
            raise DataError(f"{key}.path: '{name}' ({local}, a dataset in the hub's layout) cannot be loaded "
                            f"(subset={subset}, split={split}): {err}") from None
        raise DataError(
            f"{key}.path: '{name}' is not a local file or directory, and loading it as a hub dataset "
            f"(subset={subset}, split={split}) failed: {err}"
        ) from None


def _read_hub(key: str, name: str, subset: str | None, split: str) -> Iterator[tuple[str, dict]]:
    table = _load_hub(key, name, subset, split)
    for index, row in enumerate(table, start=1):
        yield f"{name}[{split}] row {index}", row


def read_records(key: str, path_or_name: str, subset: str | None, split: str,
                 bad_lines: list[str] | None = None, mirror: str | None = None) -> Iterator[tuple[str, dict]]:
    """(where, row) of every row of a local file, a directory of files, or a hub dataset (as Python dicts).

    With ``bad_lines``, JSON Lines that cannot be read (not UTF-8, not JSON) are recorded there and skipped.
    """
    path = Path(path_or_name).expanduser()
    if path.is_dir() and hub_layout(path):
        return _local_hub_records(key, path, subset, split)
    if path.exists():
        return (rec for f in _files_of(path) for rec in _read_file(f, bad_lines))
    if _looks_local(path_or_name):
        raise DataError(f"{key}.path: file or directory '{path_or_name}' does not exist")
    local = mirrored(key, path_or_name, mirror)
    if local is not None:
        return _local_hub_records(key, local, subset, split, name=path_or_name)
    return _read_hub(key, path_or_name, subset, split)


def _local_hub_records(key, path: Path, subset, split, name: str | None = None):
    table = _load_hub(key, name or str(path), subset, split, local=path)
    return ((f"{path}[{split}] row {i}", row) for i, row in enumerate(table, start=1))


# --------------------------------------------------------------------------- pieces of a source


@dataclass
class Piece:
    """One part of a source read by one reader: a file, or a split of a (hub-layout) dataset."""

    label: str
    where: Callable[[int], str]  # row index (0-based) -> "FILE line N" / "FILE row N" / "NAME[split] row N"
    dataset: object = None  # Arrow rows (datasets.Dataset), or None ...
    records: Callable[[], Iterator[tuple[str, dict]]] | None = None  # ... for rows read in Python
    bad_lines: list[str] = field(default_factory=list)


class JsonlLines:
    """Row index -> physical line of a JSON Lines file (blank lines skipped), computed once, only if asked."""

    def __init__(self, path: Path):
        self.path, self._lines = path, None

    def __call__(self, index: int) -> str:
        if self._lines is None:
            with self.path.open("rb") as handle:
                self._lines = [n for n, raw in enumerate(handle, start=1) if raw.strip()]
        return f"{self.path} line {self._lines[index]}"


def _rows_named(label: str) -> Callable[[int], str]:
    return lambda index: f"{label} row {index + 1}"


def _arrow_file(path: Path, kind: str):
    """The file through datasets' packaged reader (cached Arrow), or None when the reader refuses it."""
    import datasets

    reader = {"jsonl": datasets.Dataset.from_json, "csv": datasets.Dataset.from_csv,
              "parquet": datasets.Dataset.from_parquet}[kind]
    try:
        table = reader(str(path))
        if kind == "jsonl":
            table.data.table.validate(full=True)  # Arrow's JSON reader keeps bytes that are not UTF-8 as they are
        return table
    except Exception:  # not JSON, not UTF-8, empty, ...: the Python reader says which line
        return None


def _file_piece(path: Path, skip_unreadable: bool) -> Piece:
    kind = FILE_TYPES[path.suffix]
    if kind == "json":
        return Piece(str(path), _rows_named(str(path)), records=lambda: _read_json(path))
    table = _arrow_file(path, kind)
    if kind == "jsonl":
        piece = Piece(str(path), JsonlLines(path), dataset=table)
        piece.records = lambda: read_jsonl(path, piece.bad_lines if skip_unreadable else None)
        return piece
    if table is None:  # CSV or Parquet the reader refused: say why (a line that is not UTF-8, for CSV)
        if kind == "csv":
            check_utf8(path)
        list(_read_with_datasets(path, kind))  # raises DataError with the reader's message
    return Piece(str(path), _rows_named(str(path)), dataset=table,
                 records=lambda: _read_with_datasets(path, kind))


def pieces(key: str, path_or_name: str, subset: str | None, split: str, mirror: str | None,
           skip_unreadable: bool) -> Iterator[Piece]:
    """The parts of a source: its file(s), or the requested split of a hub (or hub-layout) dataset."""
    path = Path(path_or_name).expanduser()
    if path.is_dir() and hub_layout(path):
        yield Piece(f"{path}[{split}]", _rows_named(f"{path}[{split}]"),
                    dataset=_load_hub(key, str(path), subset, split, local=path))
        return
    if path.exists():
        for file in _files_of(path):
            yield _file_piece(file, skip_unreadable)
        return
    if _looks_local(path_or_name):
        raise DataError(f"{key}.path: file or directory '{path_or_name}' does not exist")
    local = mirrored(key, path_or_name, mirror)
    label = f"{local if local is not None else path_or_name}[{split}]"
    yield Piece(label, _rows_named(label), dataset=_load_hub(key, path_or_name, subset, split, local=local))


# --------------------------------------------------------------------------- validation


def _validate_rows(rows: list[dict], layout: str, conversational: bool, fields: list) -> dict:
    """Rows normalised to the layout's format by the row rules; a row that is not valid has its reason in
    ERROR_COLUMN (and nulls elsewhere)."""
    out = {f: [] for f in fields}
    out[ERROR_COLUMN] = []
    for raw in rows:
        try:
            row = normalise_row(layout, raw)
            if is_conversational(row) != conversational:
                raise ValueError(f"is {KIND[not conversational]} but earlier rows are {KIND[conversational]}; "
                                 "a source must be one or the other")
            error = None
        except ValueError as err:
            row, error = {}, str(err)
        for f in fields:
            out[f].append(row.get(f))
        out[ERROR_COLUMN].append(error)
    return out


def _validate_table(batch, layout: str, conversational: bool, schema, source_features, version: str):
    """A batch (an Arrow table) normalised to ``schema``: rows the vectorised checks accept are taken as they
    are, column-wise; every other row goes through the row rules, in place (the row order is kept). Those rows
    are decoded by ``source_features`` (the source's own ``datasets`` features), so that a nested value
    ``datasets`` stored as JSON text (its Json type, for mixed shapes) reaches the rules as the object it was."""
    import numpy as np
    import pyarrow as pa

    from align_train.data.vectorised import clean_rows

    fields = [f for f in schema.names if f != ERROR_COLUMN]
    found = clean_rows(layout, batch, conversational)
    clean = found[0] if found is not None else np.zeros(batch.num_rows, dtype=bool)
    if clean.all():
        columns = [found[1][f].cast(schema.field(f).type) for f in fields]
        return pa.Table.from_arrays(columns + [pa.nulls(batch.num_rows, pa.string())], schema=schema)
    position = pa.array(np.arange(batch.num_rows))
    parts = []
    if clean.any():
        keep = pa.array(clean)
        columns = [found[1][f].filter(keep).cast(schema.field(f).type) for f in fields]
        parts.append(pa.Table.from_arrays(columns + [pa.nulls(int(clean.sum()), pa.string()), position.filter(keep)],
                                          names=schema.names + ["__position__"]))
    dirty = np.flatnonzero(~clean)
    decoded = source_features.decode_batch(batch.take(pa.array(dirty)).to_pydict())
    rows = [dict(zip(decoded, values)) for values in zip(*decoded.values())] if decoded else []
    checked = _validate_rows(rows, layout, conversational, fields)
    checked["__position__"] = dirty
    parts.append(pa.Table.from_pydict(checked, schema=schema.append(pa.field("__position__", pa.int64()))))
    table = pa.concat_tables([p.cast(parts[-1].schema) for p in parts]).sort_by("__position__")
    return table.drop_columns(["__position__"])


def num_proc_for(rows: int) -> int | None:
    """Processes for a map over ``rows`` rows: one for small sets (a process costs more than it saves)."""
    if rows < PARALLEL_FROM_ROWS:
        return None
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(cpus, 8) if cpus > 1 else None


def _arrow_kind(dataset, layout: str) -> bool:
    return is_list_feature(dataset.features.get(LAYOUTS[layout].main))


def _python_only(dataset, layout: str) -> bool:
    """Columns whose rows mix types (datasets gives them its Json type) are validated row by row in Python."""
    return any(type(dataset.features.get(c)).__name__ == "Json" for c in LAYOUTS[layout].columns)


def _validate_arrow(dataset, layout: str, conversational: bool, where: Callable[[int], str], desc: str):
    """(valid rows, errors): a batched, cached map over the rows; errors name the row through ``where``."""
    import numpy as np
    import pyarrow.compute as pc

    from datasets import Value

    features = features_for(LAYOUTS[layout].format, conversational).copy()
    features[ERROR_COLUMN] = Value("string")
    # The layout's columns (or, when none is there, one column to carry the row count: every row then says what
    # it is missing).
    present = [c for c in LAYOUTS[layout].columns if c in dataset.column_names] or dataset.column_names[:1]
    selected = dataset.select_columns(present)
    checked = selected.with_format("arrow").map(
        _validate_table, batched=True, batch_size=BATCH, remove_columns=present, features=features,
        fn_kwargs={"layout": layout, "conversational": conversational, "schema": features.arrow_schema,
                   "source_features": selected.features, "version": VERSION},
        num_proc=num_proc_for(len(dataset)), desc=f"validating {desc}",
    ).with_format(None)
    column = checked.data.column(ERROR_COLUMN)
    bad = pc.is_valid(column)
    errors: list[str] = []
    if pc.any(bad).as_py():
        mask = np.asarray(bad)
        messages = column.filter(bad).to_pylist()
        errors = [f"{where(int(i))}: {m}" for i, m in zip(np.flatnonzero(mask), messages)]
        checked = checked.select(np.flatnonzero(~mask))
    return checked.remove_columns(ERROR_COLUMN), errors


def _rename_arrow(dataset, columns: dict[str, str], where: Callable[[int], str]):
    if not columns:
        return dataset
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise DataError(f"{where(0)}: column(s) {missing} named in 'columns' are absent; "
                        f"present: {sorted(dataset.column_names)}")
    replaced = [c for c in columns.values() if c in dataset.column_names and c not in columns]
    return (dataset.remove_columns(replaced) if replaced else dataset).rename_columns(columns)


def _rename(row: dict, columns: dict[str, str], where: str) -> dict:
    if not columns:
        return row
    missing = [c for c in columns if c not in row]
    if missing:
        raise DataError(f"{where}: column(s) {missing} named in 'columns' are absent; present: {sorted(row)}")
    renamed = {k: v for k, v in row.items() if k not in columns}
    renamed.update({target: row[source] for source, target in columns.items()})
    return renamed


def _unknown_layout(where: str, columns) -> DataError:
    return DataError(f"{where}: cannot tell the data format from columns {sorted(columns)}; expected the fields of "
                     f"one of {describe_layouts()}. Map columns with 'columns' or set 'format'.")


class _SourceReader:
    """Reads the pieces of one source in turn, agreeing on one layout and one kind (conversational or not)."""

    def __init__(self, key: str, source, skip_invalid_rows: bool, mirror: str | None, collect: bool = False):
        self.key, self.source, self.skip, self.mirror, self.collect = key, source, skip_invalid_rows, mirror, collect
        self.setting = source.format
        if self.setting is not None and self.setting not in known_settings():
            raise DataError(f"{key}.format: '{self.setting}' is unknown; expected one of {', '.join(known_settings())}")
        self.columns = dict(source.columns)
        self.layout: str | None = None
        self.conversational: bool | None = None
        self.parts: list = []
        self.errors: list[str] = []
        self.total = 0

    def read(self) -> SourceRows:
        for piece in pieces(self.key, self.source.path, self.source.subset, self.source.split, self.mirror, self.skip):
            table = piece.dataset
            if table is not None and len(table) > 0:
                table = _rename_arrow(table, self.columns, piece.where)
                if self.layout is None:
                    self.layout = choose_layout(self.setting, table.column_names)
                    if self.layout is None:
                        raise _unknown_layout(piece.where(0), table.column_names)
                if not _python_only(table, self.layout):
                    self._arrow(piece, table)
                    continue
                if piece.records is not None:  # the file itself: datasets' Json columns do not round-trip every value
                    self._python(piece, piece.records())
                else:
                    self._python(piece, ((piece.where(i), row) for i, row in enumerate(table)), renamed=True)
            elif table is None and piece.records is not None:
                self._python(piece, piece.records())
        return self._result()

    def _arrow(self, piece: Piece, table) -> None:
        if self.conversational is None:
            self.conversational = _arrow_kind(table, self.layout)
        good, errors = _validate_arrow(table, self.layout, self.conversational, piece.where,
                                       f"{self.key} ({piece.label})")
        self.total += len(table)
        self.errors += errors
        if len(good):
            self.parts.append(good)

    def _python(self, piece: Piece, records, renamed: bool = False) -> None:
        """Rows one by one: the reading of files the Arrow readers refuse, naming the line of every problem."""
        from datasets import Dataset

        rows, errors, unknown = [], [], []
        among = layouts_for(self.setting)

        def validate(where: str, raw: dict) -> None:
            try:
                row = normalise_row(self.layout, raw)
                if self.conversational is None:
                    self.conversational = is_conversational(row)
                if is_conversational(row) != self.conversational:
                    raise ValueError(f"is {KIND[is_conversational(row)]} but earlier rows are "
                                     f"{KIND[self.conversational]}; a source must be one or the other")
                rows.append(row)
            except ValueError as err:
                errors.append(f"{where}: {err}")

        for where, raw in records:
            self.total += 1
            raw = raw if renamed else _rename(raw, self.columns, where)
            if self.layout is None:
                self.layout = infer_layout(raw, among)
                if self.layout is None:
                    unknown.append((where, raw))  # validated (and reported) once the layout is known
                    continue
                for earlier in unknown:
                    validate(*earlier)
                unknown = []
            validate(where, raw)
        if self.layout is None and unknown:
            if self.setting is None:
                raise _unknown_layout(*unknown[0])
            self.layout = choose_layout(self.setting, ())
            for earlier in unknown:
                validate(*earlier)
        self.errors += piece.bad_lines + errors
        if rows:
            fmt = LAYOUTS[self.layout].format
            self.parts.append(Dataset.from_list(rows, features=features_for(fmt, self.conversational)))

    def _result(self) -> SourceRows:
        name, errors = self.key, self.errors
        if not self.parts and not errors:
            raise DataError(f"data source '{name}' ({self.source.path}) has no rows")
        fmt = LAYOUTS[self.layout].format if self.layout else None
        if self.collect:  # every row read and every problem kept, valid rows or not (align-data inspect)
            return self._rows(fmt)
        if errors and not self.skip:
            shown = "\n  ".join(errors[:MAX_ERRORS_SHOWN])
            more = f"\n  ... and {len(errors) - MAX_ERRORS_SHOWN} more" if len(errors) > MAX_ERRORS_SHOWN else ""
            raise DataError(
                f"data source '{name}': {len(errors)} invalid row(s) for format '{fmt}' (layout '{self.layout}'):"
                f"\n  {shown}{more}\nFix them, or set data.skip_invalid_rows=true to skip (and count) them."
            )
        if not self.parts:
            raise DataError(f"data source '{name}': every one of its {len(errors)} rows is invalid, e.g. {errors[0]}")
        return self._rows(fmt)

    def _rows(self, fmt: str) -> SourceRows:
        from datasets import Dataset, concatenate_datasets

        features = features_for(fmt, bool(self.conversational))
        parts = [p if p.features == features else p.cast(features) for p in self.parts]
        dataset = (parts[0] if len(parts) == 1 else concatenate_datasets(parts)) if parts else \
            Dataset.from_list([], features=features)
        return SourceRows(name=self.key, format=fmt, dataset=dataset, skipped=self.errors, layout=self.layout,
                          total_rows=self.total)


def read_source(key: str, source, skip_invalid_rows: bool, mirror: str | None = None,
                collect: bool = False) -> SourceRows:
    """Read and validate every row of one configured source (a ``SourceConfig`` at config key ``key``).

    ``mirror`` is ``data.hub_mirror``: a directory holding hub datasets as ``owner/name/`` in their hub layout.
    With ``collect``, invalid rows are never an error: every problem is returned in ``skipped``.
    """
    return _SourceReader(key, source, skip_invalid_rows, mirror, collect).read()
