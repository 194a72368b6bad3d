"""Reading one data source into validated rows, with file and row numbers in every error.

Local JSON Lines are parsed line by line (so a malformed line is reported by its line
number); JSON, CSV, Parquet and hub datasets are read with `datasets`. Every row is then
validated against its format's schema. Bad rows are an error that lists them, unless the
recipe sets ``data.skip_invalid_rows``, in which case they are counted and reported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from align_train.data.formats import FORMATS, infer_format, is_conversational, normalise_row
from align_train.errors import DataError

FILE_TYPES = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
MAX_ERRORS_SHOWN = 10


@dataclass
class SourceRows:
    """A source's valid rows (format fields only) and what was skipped."""

    name: str
    format: str
    rows: list[dict]
    skipped: list[str] = field(default_factory=list)  # "file row N: reason"


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


def _read_hub(key: str, name: str, subset: str | None, split: str) -> Iterator[tuple[str, dict]]:
    import datasets

    try:
        table = datasets.load_dataset(name, subset, split=split)
    except Exception as err:
        raise DataError(
            f"{key}.path: '{name}' is not a local file or directory, and loading it as a hub dataset "
            f"(subset={subset}, split={split}) failed: {err}"
        ) from None
    for index, row in enumerate(table, start=1):
        yield f"{name}[{split}] row {index}", row


def _looks_local(path: str) -> bool:
    return path.startswith((".", "/", "~")) or Path(path).suffix in FILE_TYPES


def _rename(row: dict, columns: dict[str, str], where: str) -> dict:
    if not columns:
        return row
    missing = [c for c in columns if c not in row]
    if missing:
        raise DataError(f"{where}: column(s) {missing} named in 'columns' are absent; present: {sorted(row)}")
    renamed = {k: v for k, v in row.items() if k not in columns}
    renamed.update({target: row[source] for source, target in columns.items()})
    return renamed


def read_records(key: str, path_or_name: str, subset: str | None, split: str,
                 bad_lines: list[str] | None = None) -> Iterator[tuple[str, dict]]:
    """(where, row) of every row of a local file, a directory of files, or a hub dataset.

    With ``bad_lines``, JSON Lines that cannot be read (not UTF-8, not JSON) are recorded there and skipped.
    """
    path = Path(path_or_name).expanduser()
    if path.exists():
        return (rec for f in _files_of(path) for rec in _read_file(f, bad_lines))
    if _looks_local(path_or_name):
        raise DataError(f"{key}.path: file or directory '{path_or_name}' does not exist")
    return _read_hub(key, path_or_name, subset, split)


def read_source(key: str, source, skip_invalid_rows: bool) -> SourceRows:
    """Read and validate every row of one configured source (a ``SourceConfig`` at config key ``key``)."""
    name = key
    unreadable: list[str] = []
    records = read_records(key, source.path, source.subset, source.split,
                           bad_lines=unreadable if skip_invalid_rows else None)

    fmt = source.format
    if fmt is not None and fmt not in FORMATS:
        raise DataError(f"{key}.format: '{fmt}' is unknown; expected one of {', '.join(FORMATS)}")
    rows, errors = [], []
    unknown: list[tuple[str, dict]] = []  # rows read before the format is known (e.g. a bad first row)

    def validate(where: str, raw: dict) -> None:
        try:
            row = normalise_row(fmt, raw)
            if rows and is_conversational(row) != is_conversational(rows[0]):
                kind = {True: "conversational (message lists)", False: "standard (plain strings)"}
                raise ValueError(
                    f"is {kind[is_conversational(row)]} but earlier rows are {kind[is_conversational(rows[0])]}; "
                    "a source must be one or the other"
                )
            rows.append(row)
        except ValueError as err:
            errors.append(f"{where}: {err}")

    for where, raw in records:
        raw = _rename(raw, dict(source.columns), where)
        if fmt is None:
            fmt = infer_format(list(raw))
            if fmt is None:
                unknown.append((where, raw))
                continue
            for earlier in unknown:  # now validated (and reported) against the inferred format
                validate(*earlier)
        validate(where, raw)
    errors = unreadable + errors
    if fmt is None and unknown:
        where, raw = unknown[0]
        raise DataError(
            f"{where}: cannot tell the data format from columns {sorted(raw)}; expected the fields of one of "
            + "; ".join(f"{f.name} ({', '.join(f.fields)})" for f in FORMATS.values())
            + ". Map columns with 'columns' or set 'format'."
        )
    if not rows and not errors:
        raise DataError(f"data source '{name}' ({source.path}) has no rows")
    if errors and not skip_invalid_rows:
        shown = "\n  ".join(errors[:MAX_ERRORS_SHOWN])
        more = f"\n  ... and {len(errors) - MAX_ERRORS_SHOWN} more" if len(errors) > MAX_ERRORS_SHOWN else ""
        raise DataError(
            f"data source '{name}': {len(errors)} invalid row(s) for format '{fmt}':\n  {shown}{more}\n"
            "Fix them, or set data.skip_invalid_rows=true to skip (and count) them."
        )
    if not rows:
        raise DataError(f"data source '{name}': every one of its {len(errors)} rows is invalid, e.g. {errors[0]}")
    return SourceRows(name=name, format=fmt, rows=rows, skipped=errors)
