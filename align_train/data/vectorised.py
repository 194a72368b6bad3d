"""Validation in Arrow compute: which rows of a batch are certainly valid and already in their format's form.

The common case -- well-formed strings and ``{role, content}`` turn lists -- is decided column-wise by
``pyarrow.compute``, with no Python object per row. Every other row (one with a problem, or one that
needs a conversion such as an implicit prompt) goes to the row-by-row rules of ``formats.py``, which say
exactly what is wrong; a row accepted here is one those rules accept unchanged. Layouts whose rows
always need converting (implicit prompts, the H4 layout) have no vectorised check.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from align_train.data.formats import ROLES

TURN = pa.struct([("role", pa.string()), ("content", pa.string())])


def _column(table: pa.Table, name: str) -> pa.Array | None:
    if name not in table.column_names:
        return None
    column = table.column(name)
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _is_turns(array: pa.Array) -> bool:
    if not pa.types.is_list(array.type) or not pa.types.is_struct(array.type.value_type):
        return False
    fields = {f.name: f.type for f in array.type.value_type}
    return all(pa.types.is_string(fields.get(k)) or pa.types.is_large_string(fields.get(k))
               for k in ("role", "content"))


def _is_text(array: pa.Array) -> bool:
    return pa.types.is_string(array.type) or pa.types.is_large_string(array.type)


def _mask(array) -> np.ndarray:
    return np.asarray(pc.fill_null(array, False), dtype=bool)


# A character Python's str.strip() never removes: printable ASCII other than space, or anything above U+00A0
# that is not one of Python's Unicode spaces. A string holding one is certainly not blank; any other string
# (blank or not) is left to the row rules.
NON_BLANK = r"[!-~]|[^\x{00}-\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]"


def _text_ok(array: pa.Array) -> np.ndarray:
    """Not null and certainly not blank."""
    return _mask(pc.match_substring_regex(array, NON_BLANK))


def _turns_ok(array: pa.Array, need_assistant: bool = False) -> np.ndarray:
    """Non-empty lists whose turns all have a known role and non-blank content (and an assistant turn)."""
    ok = _mask(pc.greater(pc.list_value_length(array), 0))
    flat, parents = pc.list_flatten(array), np.asarray(pc.list_parent_indices(array))
    role, content = pc.struct_field(flat, "role"), pc.struct_field(flat, "content")
    turn_ok = _mask(pc.and_(pc.and_(pc.is_valid(flat), pc.is_in(role, pa.array(ROLES))),
                            pc.match_substring_regex(content, NON_BLANK)))
    ok[np.unique(parents[~turn_ok])] = False
    if need_assistant:
        has = np.zeros(len(array), dtype=bool)
        has[np.unique(parents[_mask(pc.equal(role, "assistant"))])] = True
        ok &= has
    return ok


def _turns(array: pa.Array) -> pa.Array:
    """The turn lists reduced to {role, content} (extra keys of a turn dropped, as the row rules do)."""
    values = array.values
    return pa.ListArray.from_arrays(array.offsets, pa.StructArray.from_arrays(
        [values.field("role").cast(pa.string()), values.field("content").cast(pa.string())], fields=list(TURN)),
        mask=pc.is_null(array))


def _key(array: pa.Array) -> pa.Array:
    """One string per row that is equal exactly when the rows are (for the identical-pair check)."""
    if _is_text(array):
        return array.cast(pa.string())
    values = array.values
    joined = [pc.binary_join(pa.ListArray.from_arrays(array.offsets, values.field(k).cast(pa.string())), "\x00")
              for k in ("role", "content")]
    return pc.binary_join_element_wise(joined[0], joined[1], "\x01")


def _texts(table: pa.Table, names: tuple[str, ...], conversational: bool):
    """(ok mask, {name: normalised column}) for text-or-turns columns of one kind, or None if not that shape."""
    arrays = [_column(table, n) for n in names]
    if any(a is None for a in arrays) or not all((_is_turns if conversational else _is_text)(a) for a in arrays):
        return None
    ok = np.ones(table.num_rows, dtype=bool)
    out = {}
    for name, array in zip(names, arrays):
        ok &= _turns_ok(array) if conversational else _text_ok(array)
        out[name] = _turns(array) if conversational else array.cast(pa.string())
    return ok, out


def _label(array: pa.Array | None):
    """(ok mask, bool column) for a bool column, or integers that are all 1 / 0 where set; None otherwise."""
    if array is None:
        return None
    if pa.types.is_boolean(array.type):
        return _mask(pc.is_valid(array)), array
    if pa.types.is_integer(array.type):
        ok = _mask(pc.is_in(array, pa.array([0, 1], type=array.type)))
        return ok, pc.not_equal(array, pa.scalar(0, type=array.type))
    return None


def clean_rows(layout: str, table: pa.Table, conversational: bool):
    """(mask of rows certainly valid as they are, {format field: column}) for a batch, or None (no fast check)."""
    if layout == "messages":
        array = _column(table, "messages")
        if array is None or not _is_turns(array):
            return None
        return _turns_ok(array, need_assistant=True), {"messages": _turns(array)}
    if layout == "documents":
        array = _column(table, "text")
        if array is None or not _is_text(array):
            return None
        return _text_ok(array), {"text": array.cast(pa.string())}
    if layout == "preference":
        found = _texts(table, ("prompt", "chosen", "rejected"), conversational)
        if found is None:
            return None
        ok, out = found
        ok &= ~_mask(pc.equal(_key(out["chosen"]), _key(out["rejected"])))
        return ok, out
    if layout in ("feedback", "completion", "safety_labels"):
        answer = "response" if layout == "safety_labels" else "completion"
        found = _texts(table, ("prompt", answer), conversational)
        if found is None:
            return None
        ok, out = found
        out["completion"] = out.pop(answer)
        if layout == "completion":
            return ok, out
        label = _label(_column(table, "is_safe" if layout == "safety_labels" else "label"))
        if label is None:
            return None
        ok &= label[0]
        out["label"] = label[1]
        return ok, out
    return None  # implicit prompts: every row is converted by TRL's extract_prompt
