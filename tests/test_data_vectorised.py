"""The column-wise (Arrow compute) checks agree with the row rules: a row they accept is one the rules accept
unchanged, and the well-formed rows of every layout they cover are accepted without the rules."""

import pyarrow as pa
import pytest

from align_train.data.formats import normalise_row
from align_train.data.vectorised import clean_rows

TURN = pa.struct([("role", pa.string()), ("content", pa.string())])
TURNS = pa.list_(TURN)


def turns(*pairs):
    return [{"role": r, "content": c} for r, c in pairs]


GOOD_CHAT = turns(("user", "hi"), ("assistant", "hello"))
CASES = {
    # layout: (schema, well-formed rows, rows the rules refuse or may refuse)
    "messages": (
        pa.schema([("messages", TURNS)]),
        [{"messages": GOOD_CHAT}, {"messages": turns(("system", "be kind"), ("user", "q"), ("assistant", "a"))}],
        [{"messages": turns(("user", "hi"))}, {"messages": []}, {"messages": None},
         {"messages": turns(("user", "hi"), ("assistant", " \n"))}, {"messages": turns(("bot", "x"), ("assistant", "y"))},
         {"messages": [{"role": "user", "content": None}, {"role": "assistant", "content": "a"}]},
         {"messages": [None, {"role": "assistant", "content": "a"}]},
         {"messages": turns(("user", "hi"), ("assistant", "\u3000"))}],
    ),
    "documents": (
        pa.schema([("text", pa.string())]),
        [{"text": "A document."}, {"text": "  leading space"}, {"text": "é"}],
        [{"text": ""}, {"text": " \t\n"}, {"text": None}, {"text": "\u00a0\u2003"}],
    ),
    "preference": (
        pa.schema([("prompt", TURNS), ("chosen", TURNS), ("rejected", TURNS)]),
        [{"prompt": turns(("user", "q")), "chosen": turns(("assistant", "good")),
          "rejected": turns(("assistant", "bad"))}],
        [{"prompt": turns(("user", "q")), "chosen": turns(("assistant", "same")),
          "rejected": turns(("assistant", "same"))},
         {"prompt": turns(("user", "q")), "chosen": turns(("assistant", "")), "rejected": turns(("assistant", "b"))},
         {"prompt": None, "chosen": turns(("assistant", "a")), "rejected": turns(("assistant", "b"))},
         # contents that join alike: the column-wise check must leave them to the rules, never accept them wrongly
         {"prompt": turns(("user", "q")), "chosen": turns(("assistant", "x\x00y"), ("user", "z")),
          "rejected": turns(("assistant", "x"), ("user", "y\x00z"))}],
    ),
    "feedback": (
        pa.schema([("prompt", pa.string()), ("completion", pa.string()), ("label", pa.int64())]),
        [{"prompt": "q", "completion": "a", "label": 1}, {"prompt": "q", "completion": "b", "label": 0}],
        [{"prompt": "q", "completion": "a", "label": 2}, {"prompt": "q", "completion": "a", "label": None},
         {"prompt": " ", "completion": "a", "label": 1}],
    ),
    "safety_labels": (
        pa.schema([("prompt", pa.string()), ("response", pa.string()), ("is_safe", pa.bool_())]),
        [{"prompt": "q", "response": "a", "is_safe": True}, {"prompt": "q", "response": "b", "is_safe": False}],
        [{"prompt": "q", "response": "a", "is_safe": None}, {"prompt": "q", "response": None, "is_safe": True}],
    ),
    "completion": (
        pa.schema([("prompt", TURNS), ("completion", TURNS)]),
        [{"prompt": turns(("user", "q")), "completion": turns(("assistant", "a"))}],
        [{"prompt": turns(("user", "q")), "completion": turns(("assistant", ""))}],
    ),
}


def _accepted(layout, row):
    try:
        return normalise_row(layout, row)
    except ValueError:
        return None


@pytest.mark.parametrize("layout", sorted(CASES))
@pytest.mark.parametrize("offset", [0, 1])
def test_column_checks_agree_with_the_row_rules(layout, offset):
    schema, good, bad = CASES[layout]
    rows = [good[0]] + [r for pair in zip(bad, good * len(bad)) for r in pair]  # interleaved, so masks line up
    table = pa.Table.from_pylist(rows, schema=schema).slice(offset)  # a slice: offsets that do not start at 0
    rows = rows[offset:]
    conversational = pa.types.is_list(schema.field(0).type)
    ok, columns = clean_rows(layout, table, conversational)
    for i, row in enumerate(rows):
        expected = _accepted(layout, row)
        if ok[i]:
            got = {name: column[i].as_py() for name, column in columns.items()}
            assert expected is not None and got == expected, (i, row)
        if row in good:
            assert ok[i], f"well-formed row {i} went to the row rules: {row}"
        if expected is None:
            assert not ok[i], (i, row)


def test_implicit_prompts_and_mixed_kinds_always_go_to_the_rules():
    # the H4 layout (a string prompt beside conversations) and implicit prompts are converted row by row
    h4 = pa.Table.from_pylist([{"prompt": "q", "chosen": turns(("user", "q"), ("assistant", "a")),
                                "rejected": turns(("user", "q"), ("assistant", "b"))}])
    assert clean_rows("preference", h4, True) is None
    implicit = pa.Table.from_pylist([{"chosen": "Q: a", "rejected": "Q: b"}])
    assert clean_rows("implicit_preference", implicit, False) is None
