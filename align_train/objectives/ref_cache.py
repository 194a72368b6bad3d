"""Reference log-probs computed once per sweep: a cache beside the run directories.

With ``objective.precompute_ref_log_probs=true`` TRL's DPO and KTO trainers (and BCO on KTO's data
path) run the reference model over the whole tokenised dataset once, before training, and add the
log-probs as columns (``ref_chosen_logps`` / ``ref_rejected_logps``, ``ref_logps`` / ``ref_KL_logps``).
Those columns depend only on the reference, the tokenised data and how it is cut and scored, never on
beta or the learning rate, so a ``--multirun`` over such settings can share them. Here they are kept in
``RunDir.ref_cache`` (the parent of the run directories), one entry per key:

- the reference model's weights (TRL's sha256 of its state dict, taken before training),
- the tokenised dataset (sha256 of every column's Arrow data, in row order),
- max length and truncation, the chat template, and the few trainer settings that change the scores
  (precision, LD-DPO's ``ld_alpha``, KTO's KL batch, padding-free batches, the TRL version).

An entry is written into a temporary directory and renamed into place whole, with ``entry.json``
(the key, the row count and the sha256 of every data file) written last inside it: an entry without
it, with a file whose checksum does not match, another key or another row count is never used; it is
removed and the log-probs are computed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from align_train import console

VERSION = 1
ENTRY = "entry.json"
DATA = "data"


def data_digest(dataset) -> str:
    """sha256 of a dataset's columns (names, types, values in row order), read from its Arrow table."""
    import pyarrow as pa

    digest = hashlib.sha256()
    table = dataset.data.table if hasattr(dataset.data, "table") else dataset.data
    if getattr(dataset, "_indices", None) is not None:  # a selection or shuffle not yet flattened
        table = dataset.flatten_indices().data.table
    for name in sorted(table.column_names):
        column = table.column(name)
        digest.update(f"{name}:{column.type}".encode())
        for chunk in column.chunks:
            _update(digest, chunk, pa)
    digest.update(str(len(dataset)).encode())
    return digest.hexdigest()


def _update(digest, array, pa) -> None:
    """Values (and list lengths, and nulls) of one Arrow array, independent of how it is chunked or sliced."""
    if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        digest.update(array.value_lengths().fill_null(-1).to_numpy(zero_copy_only=False).tobytes())
        _update(digest, array.flatten(), pa)
    elif pa.types.is_struct(array.type):
        for i in range(array.type.num_fields):
            _update(digest, array.field(i), pa)
    elif pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        for value in array.to_pylist():
            digest.update(b"\x00" if value is None else (value.encode() + b"\x01"))
    elif pa.types.is_integer(array.type) or pa.types.is_floating(array.type) or pa.types.is_boolean(array.type):
        digest.update(array.is_null().to_numpy(zero_copy_only=False).tobytes())
        filled = array.fill_null(False if pa.types.is_boolean(array.type) else 0)
        digest.update(filled.to_numpy(zero_copy_only=False).astype("float64" if pa.types.is_floating(array.type)
                                                                   else "int64").tobytes())
    else:  # anything else (dates, binary...): its values as text
        digest.update(json.dumps(array.to_pylist(), default=str).encode())


@dataclass
class ReferenceKey:
    """What reference log-probs depend on; two runs with equal keys compute the same columns."""

    reference: str  # sha256 of the reference model's weights
    data: str  # sha256 of the tokenised dataset
    max_length: int | None
    chat_template: str | None  # sha256 of the tokenizer's chat template
    settings: dict = field(default_factory=dict)

    def digest(self) -> str:
        text = json.dumps({"version": VERSION, **asdict(self)}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:40]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ReferenceCache:
    """Entries ``<root>/<key digest>/`` of reference log-prob columns."""

    def __init__(self, root):
        self.root = Path(root)

    def path(self, key: ReferenceKey) -> Path:
        return self.root / key.digest()

    def problem(self, key: ReferenceKey, rows: int) -> str | None:
        """Why the entry for ``key`` cannot be used (None: it can); 'missing' when there is none."""
        entry = self.path(key)
        if not entry.exists():
            return "missing"
        try:
            record = json.loads((entry / ENTRY).read_text())
        except FileNotFoundError:
            return f"{ENTRY} is missing (a partial write)"
        except (OSError, json.JSONDecodeError) as err:
            return f"{ENTRY} is unreadable ({err})"
        if record.get("key") != json.loads(json.dumps(asdict(key), default=str)) or record.get("version") != VERSION:
            return "it was written for another key"
        if record.get("rows") != rows:
            return f"it holds {record.get('rows')} rows, the dataset has {rows}"
        files = record.get("files") or {}
        if not files:
            return "it lists no files"
        for name, checksum in files.items():
            path = entry / name
            if not path.is_file():
                return f"{name} is missing"
            if _sha256(path) != checksum:
                return f"{name} does not match its checksum"
        return None

    def load(self, key: ReferenceKey, rows: int):
        """The cached columns (a Dataset), or None when there is no usable entry (a bad one is removed)."""
        from datasets import Dataset

        problem = self.problem(key, rows)
        if problem == "missing":
            return None
        if problem is None:
            try:
                return Dataset.load_from_disk(str(self.path(key) / DATA), keep_in_memory=False)
            except Exception as err:  # noqa: BLE001 - any failure to read is a bad entry, rebuilt below
                problem = f"its data cannot be read ({type(err).__name__}: {err})"
        console.log(f"the entry {self.path(key)} is not used: {problem}; computing them again", "reference log-probs")
        shutil.rmtree(self.path(key), ignore_errors=True)
        return None

    def store(self, key: ReferenceKey, columns) -> Path:
        """Write an entry whole or not at all: built aside, checksummed, renamed into place."""
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.path(key)
        staging = self.root / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
        try:
            columns.flatten_indices().save_to_disk(str(staging / DATA))
            files = {str(p.relative_to(staging)): _sha256(p) for p in sorted((staging / DATA).rglob("*"))
                     if p.is_file()}
            record = {"version": VERSION, "key": json.loads(json.dumps(asdict(key), default=str)),
                      "rows": len(columns), "columns": columns.column_names, "files": files}
            (staging / ENTRY).write_text(json.dumps(record, indent=2) + "\n")
            if final.exists():  # a bad entry left behind, or another run of the sweep wrote it meanwhile
                if self.problem(key, len(columns)) is None:
                    return final
                shutil.rmtree(final, ignore_errors=True)
            os.rename(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return final


def reference_key(trainer, dataset) -> ReferenceKey:
    """The key of a TRL trainer's precomputed reference log-probs for ``dataset`` (its tokenised form)."""
    import trl

    args = trainer.args
    template = getattr(trainer.processing_class, "chat_template", None)
    settings = {
        "trainer": [c.__name__ for c in type(trainer).__mro__ if c.__module__.startswith(("trl.", "align_train."))
                    and c is not CachedReference and not c.__name__.startswith("Cached")],
        "trl": trl.__version__,
        "truncation_mode": getattr(args, "truncation_mode", None),
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        "ld_alpha": getattr(args, "ld_alpha", None),
        "padding_free": getattr(args, "padding_free", None),
        "use_logits_to_keep": getattr(args, "use_logits_to_keep", None),
        "calculate_KL": getattr(trainer, "calculate_KL", None),
    }
    return ReferenceKey(
        reference=str(trainer._precompute_model_hash), data=data_digest(dataset),
        max_length=getattr(args, "max_length", None),
        chat_template=hashlib.sha256(template.encode()).hexdigest() if template else None,
        settings=settings,
    )


class CachedReference:
    """Mixed into a TRL trainer class: its reference log-probs come from the cache when an entry matches."""

    reference_cache: ReferenceCache | None = None

    def _precompute_ref_logps(self, dataset, name, batch_size):
        from accelerate.utils import broadcast_object_list
        from datasets import concatenate_datasets

        cache = self.reference_cache
        if cache is None or getattr(self, "_precompute_model_hash", None) is None:
            return super()._precompute_ref_logps(dataset, name, batch_size)
        key = [reference_key(self, dataset) if self.accelerator.is_main_process else None]
        if self.accelerator.num_processes > 1:  # one key for all (the weights hash is rank-dependent when sharded)
            broadcast_object_list(key, from_process=0)
        key = key[0]
        found = [self.accelerator.is_main_process and cache.load(key, len(dataset)) is not None]
        if self.accelerator.num_processes > 1:
            broadcast_object_list(found, from_process=0)
        if found[0]:
            cached = cache.load(key, len(dataset))
            console.log(f"{name}: reused from {cache.path(key)}", "reference log-probs")
            return concatenate_datasets([dataset, cached], axis=1)
        result = super()._precompute_ref_logps(dataset, name, batch_size)
        added = [c for c in result.column_names if c not in dataset.column_names]
        if self.accelerator.is_main_process:
            path = cache.store(key, result.select_columns(added))
            console.log(f"{name}: computed once for this reference and data, kept in {path}", "reference log-probs")
        self.accelerator.wait_for_everyone()
        return result


def with_reference_cache(trainer_class: type, cache: ReferenceCache) -> type:
    """``trainer_class`` whose precomputed reference log-probs are read from / written to ``cache``."""
    return type(f"Cached{trainer_class.__name__}", (CachedReference, trainer_class), {"reference_cache": cache})
