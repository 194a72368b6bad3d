"""The data layer: reading sources (file types, line numbers in errors, row validation), format
inference, conversion for the objective, held-out splits, weights and mixing rules."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from align_train.config import DataConfig, SourceConfig
from align_train.data import load_data
from align_train.data import sources as sources_module
from align_train.data.sources import read_source
from align_train.errors import ConfigError, DataError
from align_train.paths import DATA_DIR

SFT = ("messages", "documents")
DPO = ("preference",)
KTO = ("feedback",)


# --------------------------------------------------------------------------- helpers


def write_jsonl(path: Path, rows: list, blank_lines_before: dict[int, int] | None = None) -> Path:
    """Rows as JSON Lines; ``rows`` may hold raw strings, written as they are (for malformed lines)."""
    lines = []
    for index, row in enumerate(rows):
        lines += [""] * (blank_lines_before or {}).get(index, 0)
        lines.append(row if isinstance(row, str) else json.dumps(row))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def data_cfg(train: dict, eval: dict | None = None, **kwargs):
    """A structured DataConfig, as Hydra would hand it over; sources are ``{name: SourceConfig | path}``."""
    def source(value):
        return value if isinstance(value, SourceConfig) else SourceConfig(path=str(value))

    return OmegaConf.structured(
        DataConfig(
            train={k: source(v) for k, v in train.items()},
            eval={k: source(v) for k, v in (eval or {}).items()},
            **kwargs,
        )
    )


def pairs(n: int, prefix: str = "q") -> list[dict]:
    return [{"prompt": f"{prefix}{i}?", "chosen": f"good {prefix}{i}", "rejected": f"bad {prefix}{i}"} for i in range(n)]


def conv_pairs(n: int) -> list[dict]:
    return [
        {
            "prompt": [{"role": "user", "content": f"q{i}?"}],
            "chosen": [{"role": "assistant", "content": f"good {i}"}],
            "rejected": [{"role": "assistant", "content": f"bad {i}"}],
        }
        for i in range(n)
    ]


def line_count(path: Path) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


@pytest.fixture
def no_hub(monkeypatch):
    """Fail the test if anything tries a hub dataset (or any datasets.load_dataset call)."""
    import datasets

    def refuse(*args, **kwargs):
        raise AssertionError(f"tried to load from the hub: {args} {kwargs}")

    monkeypatch.setattr(sources_module, "_read_hub", refuse)
    monkeypatch.setattr(datasets, "load_dataset", refuse)


# --------------------------------------------------------------------------- shipped files

EXAMPLES = [
    # file, inferred format, conversational
    ("examples/messages.jsonl", "messages", True),
    ("examples/preference.jsonl", "preference", False),
    ("examples/preference_conversational.jsonl", "preference", True),
    ("examples/feedback.jsonl", "feedback", True),
    ("examples/documents.jsonl", "documents", False),
    ("tiny/sft.jsonl", "messages", True),
    ("tiny/preference.jsonl", "preference", True),
    ("tiny/feedback.jsonl", "feedback", True),
    ("tiny/documents.jsonl", "documents", False),
    ("tiny/pretrain.jsonl", "documents", False),
]


def test_every_example_file_is_covered():
    shipped = {p.relative_to(DATA_DIR).as_posix() for d in ("examples", "tiny") for p in (DATA_DIR / d).glob("*.jsonl")}
    # prompt sets for the evaluation hook are not training data; tests/test_evaluation.py covers them
    shipped.discard("tiny/eval_prompts.jsonl")
    assert shipped == {f for f, _, _ in EXAMPLES}


@pytest.mark.parametrize("relative,fmt,conversational", EXAMPLES)
def test_shipped_files_load_with_inferred_format(relative, fmt, conversational, no_hub):
    path = DATA_DIR / relative
    n = line_count(path)
    src = read_source("data.train.x", SourceConfig(path=str(path)), skip_invalid_rows=False)
    assert src.format == fmt
    assert len(src.rows) == n and src.skipped == []

    bundle = load_data(data_cfg({"x": path}), (fmt,), "test")
    assert bundle.format == fmt
    assert len(bundle.train) == n and bundle.eval is None
    assert set(bundle.train.column_names) == set(
        {"messages": ["messages"], "preference": ["prompt", "chosen", "rejected"],
         "feedback": ["prompt", "completion", "label"], "documents": ["text"]}[fmt]
    )
    first = bundle.train[0]
    field = {"messages": "messages", "preference": "prompt", "feedback": "prompt", "documents": "text"}[fmt]
    assert isinstance(first[field], list) == conversational
    assert bundle.report["train_rows"] == n and bundle.report["skipped_rows"] == 0
    # the rows are the file's rows (reduced to the format's fields), only reordered
    originals = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    expected = Counter(json.dumps({k: r[k] for k in bundle.train.column_names}, sort_keys=True) for r in originals)
    got = Counter(json.dumps(r, sort_keys=True) for r in bundle.train.to_list())
    if fmt in ("messages", "preference", "feedback") and conversational:
        # message dicts are reduced to role/content
        def strip(v):
            return [{"role": t["role"], "content": t["content"]} for t in v] if isinstance(v, list) else v

        expected = Counter(
            json.dumps({k: strip(r[k]) for k in bundle.train.column_names}, sort_keys=True) for r in originals
        )
    assert got == expected


# --------------------------------------------------------------------------- malformed files


def test_malformed_json_line_reports_file_and_physical_line(tmp_path):
    path = write_jsonl(
        tmp_path / "bad.jsonl",
        [pairs(1)[0], '{"prompt": "a", "chosen": "b", "rejected": ', pairs(2)[1]],
        blank_lines_before={1: 1},  # line 1 row, line 2 blank, line 3 the bad one
    )
    assert path.read_text().splitlines()[2].startswith('{"prompt": "a"')
    with pytest.raises(DataError) as err:
        read_source("data.train.a", SourceConfig(path=str(path)), skip_invalid_rows=False)
    message = str(err.value)
    assert f"{path} line 3:" in message and "not valid JSON" in message
    # skip_invalid_rows skips (and reports) a line that is not JSON like any other invalid row
    src = read_source("data.train.a", SourceConfig(path=str(path)), skip_invalid_rows=True)
    assert len(src.rows) == 2 and len(src.skipped) == 1
    assert f"{path} line 3:" in src.skipped[0] and "not valid JSON" in src.skipped[0]


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [pairs(1)[0], "[1, 2]"])
    with pytest.raises(DataError, match=r"line 2: expected a JSON object, got list"):
        read_source("data.train.a", SourceConfig(path=str(path)), skip_invalid_rows=False)


def _preference_with_bad_rows(tmp_path) -> tuple[Path, dict[int, str]]:
    good = pairs(5)
    rows = [
        good[0],                                                   # line 1
        {"prompt": "", "chosen": "c", "rejected": "r"},            # line 2: empty prompt
        good[1],                                                   # line 3
        {"prompt": "p", "chosen": "c"},                            # line 4: no rejected
        {"prompt": "   ", "chosen": "c", "rejected": "r"},         # line 5: blank prompt
        good[2],                                                   # line 6
        {"prompt": "p", "chosen": "same", "rejected": "same"},     # line 7: identical pair
        good[3],                                                   # line 8
        {"prompt": "p", "chosen": "c", "rejected": None},          # line 9: null rejected
        good[4],                                                   # line 10
    ]
    bad = {2: "'prompt' is empty", 4: "missing 'rejected'", 5: "'prompt' is empty",
           7: "'chosen' and 'rejected' are identical", 9: "missing 'rejected'"}
    return write_jsonl(tmp_path / "pref.jsonl", rows), bad


def test_invalid_rows_are_an_error_listing_line_and_reason(tmp_path):
    path, bad = _preference_with_bad_rows(tmp_path)
    with pytest.raises(DataError) as err:
        load_data(data_cfg({"a": path}), DPO, "dpo")
    message = str(err.value)
    assert "data.train.a" in message and f"{len(bad)} invalid row(s)" in message
    assert "skip_invalid_rows" in message
    for line, reason in bad.items():
        assert f"{path} line {line}: {reason}" in message
    for line in (1, 3, 6, 8, 10):
        assert f"line {line}:" not in message


def test_skip_invalid_rows_keeps_valid_rows_and_counts_the_rest(tmp_path):
    path, bad = _preference_with_bad_rows(tmp_path)
    bundle = load_data(data_cfg({"a": path}, skip_invalid_rows=True), DPO, "dpo")
    assert sorted(bundle.train["prompt"]) == sorted(r["prompt"] for r in pairs(5))
    assert bundle.report["skipped_rows"] == len(bad)
    source = bundle.report["sources"]["a"]
    assert source["skipped_rows"] == len(bad) and source["valid_rows"] == 5
    examples = "\n".join(source["skipped_examples"])
    for line, reason in bad.items():
        assert f"line {line}: {reason}" in examples


def test_invalid_first_row_is_reported_as_a_row_not_as_an_unknown_format(tmp_path):
    """A bad first row must not decide the format: it is one invalid row like any other."""
    path = write_jsonl(tmp_path / "pref.jsonl", [{"prompt": "p", "chosen": "c"}] + pairs(3))
    with pytest.raises(DataError, match=r"line 1: missing 'rejected'"):
        read_source("data.train.a", SourceConfig(path=str(path)), skip_invalid_rows=False)
    src = read_source("data.train.a", SourceConfig(path=str(path)), skip_invalid_rows=True)
    assert src.format == "preference" and len(src.rows) == 3
    assert src.skipped == [f"{path} line 1: missing 'rejected'"]


@pytest.mark.parametrize(
    "row,fmt",
    [
        # HuggingFaceH4/ultrafeedback_binarized: a string prompt, conversations that repeat it, a messages
        # column and scores (trl-lib's copy, chosen / rejected only, is tests/test_data_layouts.py's)
        ({"prompt": "p", "prompt_id": "5c62e091",
          "chosen": [{"content": "p", "role": "user"}, {"content": "c", "role": "assistant"}],
          "rejected": [{"content": "p", "role": "user"}, {"content": "r", "role": "assistant"}],
          "messages": [{"content": "p", "role": "user"}, {"content": "c", "role": "assistant"}],
          "score_chosen": 8.0, "score_rejected": 6.5}, "preference"),
        ({"prompt": "p", "completion": "c", "label": True, "text": "t"}, "feedback"),
        ({"messages": [{"role": "user", "content": "p"}, {"role": "assistant", "content": "c"}], "text": "t"},
         "messages"),
        ({"text": "t", "id": 3, "source": "web"}, "documents"),
    ],
)
def test_format_inference_prefers_the_most_specific(tmp_path, row, fmt):
    path = write_jsonl(tmp_path / "rows.jsonl", [row])
    src = read_source("data.train.a", SourceConfig(path=str(path)), skip_invalid_rows=False)
    assert src.format == fmt and set(src.rows[0]) == {
        "preference": {"prompt", "chosen", "rejected"}, "feedback": {"prompt", "completion", "label"},
        "messages": {"messages"}, "documents": {"text"}}[fmt]


def test_unknown_columns_name_the_formats(tmp_path):
    path = write_jsonl(tmp_path / "odd.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(DataError) as err:
        read_source("data.train.a", SourceConfig(path=str(path)), skip_invalid_rows=True)
    message = str(err.value)
    assert f"{path} line 1" in message and "['answer', 'question']" in message
    assert "preference (prompt, chosen, rejected)" in message and "'columns'" in message


@pytest.mark.parametrize(
    "bad_row,reason",
    [
        ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]},
         "'messages[1].content' is empty"),
        ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  \n"}]},
         "'messages[1].content' is empty"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "'messages' has no assistant turn"),
        ({"messages": [{"role": "bot", "content": "hi"}]}, "'messages[0].role' is 'bot'"),
        ({"messages": []}, "'messages' must be a non-empty list"),
        ({"messages": [{"role": "user"}]}, "'messages[0]' must be an object with 'role' and 'content'"),
    ],
)
def test_invalid_messages_rows(tmp_path, bad_row, reason):
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    path = write_jsonl(tmp_path / "chat.jsonl", [good, good, bad_row, good])
    with pytest.raises(DataError) as err:
        load_data(data_cfg({"chat": path}), SFT, "sft")
    assert f"{path} line 3: {reason}" in str(err.value)
    bundle = load_data(data_cfg({"chat": path}, skip_invalid_rows=True), SFT, "sft")
    assert len(bundle.train) == 3 and bundle.report["skipped_rows"] == 1
    assert bundle.report["sources"]["chat"]["skipped_examples"][0].startswith(f"{path} line 3: {reason}")


def test_empty_assistant_turn_in_conversational_preference(tmp_path):
    rows = conv_pairs(3)
    rows[1]["chosen"] = [{"role": "assistant", "content": ""}]
    path = write_jsonl(tmp_path / "conv.jsonl", rows)
    with pytest.raises(DataError, match=r"line 2: 'chosen\[0\]\.content' is empty"):
        load_data(data_cfg({"a": path}), DPO, "dpo")


@pytest.mark.parametrize("label", ["yes", 2, -1, 0.5, "true", None])
def test_feedback_label_must_be_a_boolean_or_0_1(tmp_path, label):
    rows = [
        {"prompt": "p1", "completion": "c1", "label": True},
        {"prompt": "p2", "completion": "c2", "label": label},
        {"prompt": "p3", "completion": "c3", "label": False},
    ]
    path = write_jsonl(tmp_path / "fb.jsonl", rows)
    with pytest.raises(DataError) as err:
        load_data(data_cfg({"fb": path}), KTO, "kto")
    message = str(err.value)
    assert f"{path} line 2:" in message
    if label is None:
        assert "missing 'label'" in message
    else:
        assert f"'label' is {label!r}; expected true or false (or 1 / 0)" in message


def test_feedback_labels_1_and_0_are_true_and_false(tmp_path):
    rows = [{"prompt": f"p{i}", "completion": f"c{i}", "label": i % 2} for i in range(4)]
    bundle = load_data(data_cfg({"fb": write_jsonl(tmp_path / "fb.jsonl", rows)}), KTO, "kto")
    assert bundle.train.features["label"].dtype == "bool"
    assert sorted(map(tuple, (r.values() for r in bundle.train.to_list()))) == [
        ("p0", "c0", False), ("p1", "c1", True), ("p2", "c2", False), ("p3", "c3", True)]


def test_rows_mixing_strings_and_messages_within_a_source(tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", pairs(2) + conv_pairs(1) + [
        {"prompt": "p", "chosen": [{"role": "assistant", "content": "c"}], "rejected": "r"},
    ])
    with pytest.raises(DataError) as err:
        load_data(data_cfg({"a": path}), DPO, "dpo")
    message = str(err.value)
    assert f"{path} line 3: is conversational" in message  # a clean error, not an Arrow type error
    assert f"{path} line 4: mixes plain strings and message lists" in message
    bundle = load_data(data_cfg({"a": path}, skip_invalid_rows=True), DPO, "dpo")
    assert len(bundle.train) == 2 and bundle.report["skipped_rows"] == 2


def test_unknown_explicit_format(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", pairs(2))
    with pytest.raises(DataError, match=r"data\.train\.a\.format: 'pairs' is unknown"):
        load_data(data_cfg({"a": SourceConfig(path=str(path), format="pairs")}), DPO, "dpo")


def test_explicit_format_validates_against_it(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", pairs(2))
    with pytest.raises(DataError, match=r"line 1: missing 'completion'"):
        read_source("data.train.a", SourceConfig(path=str(path), format="feedback"), skip_invalid_rows=False)


# --------------------------------------------------------------------------- conversion and splits


def test_preference_converted_to_feedback(tmp_path):
    source = pairs(12)
    path = write_jsonl(tmp_path / "pref.jsonl", source)
    bundle = load_data(data_cfg({"p": path}), KTO, "kto")
    assert bundle.format == "feedback"
    assert bundle.report["sources"]["p"]["converted_to"] == "feedback"
    rows = bundle.train.to_list()
    assert len(rows) == 2 * len(source)
    assert sum(r["label"] is True for r in rows) == len(source)
    got = {(r["prompt"], r["completion"], r["label"]) for r in rows}
    for pair in source:
        assert (pair["prompt"], pair["chosen"], True) in got
        assert (pair["prompt"], pair["rejected"], False) in got


def test_conversion_split_keeps_pairs_together(tmp_path):
    source = pairs(20)
    path = write_jsonl(tmp_path / "pref.jsonl", source)
    bundle = load_data(data_cfg({"p": path}, eval_fraction=0.25), KTO, "kto")
    n_held = 5  # ceil(20 * 0.25)
    assert len(bundle.train) == 2 * (20 - n_held)
    assert len(bundle.eval) == 2 * n_held
    train_prompts = set(bundle.train["prompt"])
    eval_prompts = set(bundle.eval["prompt"])
    assert len(eval_prompts) == n_held and not train_prompts & eval_prompts
    assert train_prompts | eval_prompts == {r["prompt"] for r in source}
    # each side has both halves of each of its pairs
    for split in (bundle.train, bundle.eval):
        labels = Counter((r["prompt"], r["label"]) for r in split.to_list())
        assert all(labels[(p, True)] == 1 and labels[(p, False)] == 1 for p in set(split["prompt"]))
    # the held-out pairs before conversion, for preference accuracy
    assert set(bundle.heldout) == {"preference"}
    held = bundle.heldout["preference"]
    assert len(held) == n_held and all(r in source for r in held)
    assert {r["prompt"] for r in held} == eval_prompts
    assert bundle.report["sources"]["p"]["heldout_rows"] == n_held


def test_eval_fraction_split_without_conversion(tmp_path):
    path = write_jsonl(tmp_path / "pref.jsonl", pairs(10))
    bundle = load_data(data_cfg({"p": path}, eval_fraction=0.2), DPO, "dpo")
    assert len(bundle.train) == 8 and len(bundle.eval) == 2
    assert not set(bundle.train["prompt"]) & set(bundle.eval["prompt"])
    assert bundle.heldout["preference"] == bundle.eval.to_list()


def test_eval_fraction_leaving_nothing_to_train(tmp_path):
    path = write_jsonl(tmp_path / "pref.jsonl", pairs(1))
    with pytest.raises(DataError, match=r"data\.train\.p: 1 rows leave nothing to train on"):
        load_data(data_cfg({"p": path}, eval_fraction=0.5), DPO, "dpo")


@pytest.mark.parametrize("fraction", [1.0, -0.1])
def test_eval_fraction_out_of_range(tmp_path, fraction):
    path = write_jsonl(tmp_path / "pref.jsonl", pairs(4))
    with pytest.raises(ConfigError, match=r"data\.eval_fraction"):
        load_data(data_cfg({"p": path}, eval_fraction=fraction), DPO, "dpo")


def test_explicit_eval_sources_replace_eval_fraction(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", pairs(10, "t"))
    held = write_jsonl(tmp_path / "eval.jsonl", pairs(3, "e"))
    bundle = load_data(data_cfg({"t": train}, eval={"e": held}, eval_fraction=0.5), DPO, "dpo")
    assert len(bundle.train) == 10  # nothing held out of train
    assert sorted(bundle.eval["prompt"]) == sorted(r["prompt"] for r in pairs(3, "e"))
    assert bundle.heldout == {"preference": pairs(3, "e")}
    assert bundle.report["sources"]["t"]["heldout_rows"] == 0
    assert bundle.report["sources"]["eval/e"]["valid_rows"] == 3
    assert bundle.report["eval_rows"] == 3


def test_explicit_eval_source_is_converted_too(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", pairs(4, "t"))
    held = write_jsonl(tmp_path / "eval.jsonl", pairs(3, "e"))
    bundle = load_data(data_cfg({"t": train}, eval={"e": held}), KTO, "kto")
    assert len(bundle.eval) == 6 and sum(bundle.eval["label"]) == 3
    assert bundle.heldout == {"preference": pairs(3, "e")}


def test_max_eval_rows_caps_eval(tmp_path):
    path = write_jsonl(tmp_path / "pref.jsonl", pairs(20))
    bundle = load_data(data_cfg({"p": path}, eval_fraction=0.5, max_eval_rows=3), DPO, "dpo")
    assert len(bundle.eval) == 3 and bundle.report["eval_rows"] == 3
    assert len(bundle.heldout["preference"]) == 3
    assert len(bundle.train) == 10  # the cap does not move rows back into train

    held = write_jsonl(tmp_path / "eval.jsonl", pairs(8, "e"))
    bundle = load_data(data_cfg({"p": path}, eval={"e": held}, max_eval_rows=5), DPO, "dpo")
    assert len(bundle.eval) == 5 and len(bundle.train) == 20


# --------------------------------------------------------------------------- objective / format mismatches


def test_objective_cannot_take_the_source_format(tmp_path):
    path = write_jsonl(
        tmp_path / "chat.jsonl",
        [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}],
    )
    with pytest.raises(DataError) as err:
        load_data(data_cfg({"chat": path}), KTO, "kto")
    message = str(err.value)
    assert "data.train.chat" in message and "'kto'" in message
    assert "feedback" in message and "'messages'" in message


def test_feedback_cannot_become_preference(tmp_path):
    path = write_jsonl(tmp_path / "fb.jsonl", [{"prompt": "p", "completion": "c", "label": True}])
    with pytest.raises(DataError, match=r"data\.train\.fb: the objective 'dpo' trains on preference"):
        load_data(data_cfg({"fb": path}), DPO, "dpo")


def test_conversational_and_standard_sources_cannot_mix(tmp_path):
    conv = write_jsonl(tmp_path / "conv.jsonl", conv_pairs(3))
    std = write_jsonl(tmp_path / "std.jsonl", pairs(3))
    with pytest.raises(DataError) as err:
        load_data(data_cfg({"conv": conv, "std": std}), DPO, "dpo")
    message = str(err.value)
    assert "'data.train.conv' is conversational" in message and "'data.train.std' is standard" in message


def test_conversational_train_and_standard_eval_cannot_mix(tmp_path):
    conv = write_jsonl(tmp_path / "conv.jsonl", conv_pairs(3))
    std = write_jsonl(tmp_path / "std.jsonl", pairs(3))
    with pytest.raises(DataError, match=r"'data.eval.std' is standard"):
        load_data(data_cfg({"conv": conv}, eval={"std": std}), DPO, "dpo")


def test_sources_giving_different_formats_cannot_mix(tmp_path):
    chat = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}])
    docs = write_jsonl(tmp_path / "docs.jsonl", [{"text": "some text"}])
    with pytest.raises(DataError) as err:
        load_data(data_cfg({"chat": chat, "docs": docs}), SFT, "sft")
    message = str(err.value)
    assert "data.train.chat -> messages" in message and "data.train.docs -> documents" in message


def test_two_compatible_sources_are_concatenated(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", pairs(3, "a"))
    b = write_jsonl(tmp_path / "b.jsonl", pairs(5, "b"))
    bundle = load_data(data_cfg({"a": a, "b": b}), DPO, "dpo")
    assert sorted(bundle.train["prompt"]) == sorted(r["prompt"] for r in pairs(3, "a") + pairs(5, "b"))
    assert bundle.report["sources"]["a"]["train_rows"] == 3 and bundle.report["sources"]["b"]["train_rows"] == 5


def test_no_train_sources(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.train"):
        load_data(data_cfg({}), DPO, "dpo")


# --------------------------------------------------------------------------- weights and determinism


def test_fractional_weight_samples_without_repeats(tmp_path):
    path = write_jsonl(tmp_path / "pref.jsonl", pairs(10))
    bundle = load_data(data_cfg({"p": SourceConfig(path=str(path), weight=0.5)}), DPO, "dpo")
    prompts = bundle.train["prompt"]
    assert len(prompts) == round(10 * 0.5)
    assert len(set(prompts)) == len(prompts) and set(prompts) <= {r["prompt"] for r in pairs(10)}
    assert bundle.report["sources"]["p"]["train_rows"] == 5 and bundle.report["sources"]["p"]["weight"] == 0.5

    odd = write_jsonl(tmp_path / "odd.jsonl", pairs(7))
    bundle = load_data(data_cfg({"p": SourceConfig(path=str(odd), weight=0.3)}), DPO, "dpo")
    assert len(bundle.train) == round(7 * 0.3)


def test_fractional_weight_is_a_random_sample(tmp_path):
    path = write_jsonl(tmp_path / "pref.jsonl", pairs(20))
    picked = {
        frozenset(load_data(data_cfg({"p": SourceConfig(path=str(path), weight=0.5)}, seed=seed), DPO, "dpo")
                  .train["prompt"])
        for seed in range(5)
    }
    assert len(picked) > 1, "every seed sampled the same rows"


def test_fractional_weight_keeps_converted_pairs_whole(tmp_path):
    """Weights apply to pairs before conversion: a sampled pair brings both its halves."""
    path = write_jsonl(tmp_path / "pref.jsonl", pairs(20))
    bundle = load_data(data_cfg({"p": SourceConfig(path=str(path), weight=0.5)}), KTO, "kto")
    rows = bundle.train.to_list()
    assert len(rows) == 2 * 10
    labels = Counter((r["prompt"], r["label"]) for r in rows)
    assert all(labels[(p, True)] == 1 and labels[(p, False)] == 1 for p in {r["prompt"] for r in rows})


def test_weight_above_one_repeats(tmp_path):
    path = write_jsonl(tmp_path / "pref.jsonl", pairs(6))
    bundle = load_data(data_cfg({"p": SourceConfig(path=str(path), weight=2.0)}), DPO, "dpo")
    assert len(bundle.train) == 12
    assert Counter(bundle.train["prompt"]) == {r["prompt"]: 2 for r in pairs(6)}

    bundle = load_data(data_cfg({"p": SourceConfig(path=str(path), weight=1.5)}), DPO, "dpo")
    counts = Counter(bundle.train["prompt"])
    assert len(bundle.train) == 9 and set(counts) == {r["prompt"] for r in pairs(6)}
    assert sorted(counts.values()) == [1, 1, 1, 2, 2, 2]


def test_weights_apply_after_the_split(tmp_path):
    """An oversampled row never leaks into the held-out set."""
    path = write_jsonl(tmp_path / "pref.jsonl", pairs(10))
    bundle = load_data(data_cfg({"p": SourceConfig(path=str(path), weight=3.0)}, eval_fraction=0.2), DPO, "dpo")
    assert len(bundle.eval) == 2 and len(bundle.train) == 3 * 8
    assert not set(bundle.train["prompt"]) & set(bundle.eval["prompt"])


@pytest.mark.parametrize("weight", [0, 0.0, -1.0])
def test_non_positive_weight_is_a_config_error(tmp_path, weight, no_hub):
    path = write_jsonl(tmp_path / "pref.jsonl", pairs(3))
    with pytest.raises(ConfigError, match=r"data\.train\.p\.weight must be > 0"):
        load_data(data_cfg({"p": SourceConfig(path=str(path), weight=weight)}), DPO, "dpo")


def test_loading_is_deterministic_for_a_seed(tmp_path):
    path = write_jsonl(tmp_path / "pref.jsonl", pairs(30))

    def load(seed, **kwargs):
        return load_data(
            data_cfg({"p": SourceConfig(path=str(path), weight=1.5)}, seed=seed, eval_fraction=0.2, **kwargs),
            DPO, "dpo",
        )

    first, again, other = load(1), load(1), load(2)
    assert first.train.to_list() == again.train.to_list()
    assert first.eval.to_list() == again.eval.to_list()
    assert first.train.to_list() != other.train.to_list()
    # a different seed reorders / resamples, it does not change how many rows there are
    assert len(first.train) == len(other.train) == 24 + 12

    plain = lambda seed: load_data(data_cfg({"p": path}, seed=seed), DPO, "dpo").train["prompt"]  # noqa: E731
    assert plain(7) == plain(7)
    assert plain(7) != plain(8) and sorted(plain(7)) == sorted(plain(8))


# --------------------------------------------------------------------------- file types and paths


def test_csv_source(tmp_path):
    import pandas as pd

    source = pairs(4)
    path = tmp_path / "pref.csv"
    pd.DataFrame(source).to_csv(path, index=False)
    bundle = load_data(data_cfg({"c": path}), DPO, "dpo")
    assert bundle.format == "preference"
    assert sorted(bundle.train.to_list(), key=lambda r: r["prompt"]) == sorted(source, key=lambda r: r["prompt"])


def test_csv_invalid_row_is_reported_by_row(tmp_path):
    path = tmp_path / "pref.csv"
    path.write_text("prompt,chosen,rejected\np1,c1,r1\n,c2,r2\np3,c3,r3\n")
    with pytest.raises(DataError, match=rf"{path} row 2: missing 'prompt'"):
        load_data(data_cfg({"c": path}), DPO, "dpo")


def test_parquet_source_conversational(tmp_path):
    import pandas as pd

    source = conv_pairs(4)
    path = tmp_path / "pref.parquet"
    pd.DataFrame(source).to_parquet(path)
    bundle = load_data(data_cfg({"pq": path}), DPO, "dpo")
    assert bundle.format == "preference"
    assert sorted(bundle.train.to_list(), key=str) == sorted(source, key=str)


def test_parquet_feedback_converts_labels(tmp_path):
    import pandas as pd

    path = tmp_path / "fb.parquet"
    pd.DataFrame({"prompt": ["a", "b"], "completion": ["x", "y"], "label": [True, False]}).to_parquet(path)
    bundle = load_data(data_cfg({"fb": path}), KTO, "kto")
    assert sorted(bundle.train.to_list(), key=str) == [
        {"prompt": "a", "completion": "x", "label": True},
        {"prompt": "b", "completion": "y", "label": False},
    ]


def test_directory_of_files(tmp_path):
    folder = tmp_path / "shards"
    (folder / "nested").mkdir(parents=True)
    write_jsonl(folder / "a.jsonl", pairs(2, "a"))
    write_jsonl(folder / "b.jsonl", pairs(3, "b"))
    write_jsonl(folder / "nested" / "c.jsonl", pairs(1, "c"))
    (folder / "README.md").write_text("not data")
    bundle = load_data(data_cfg({"d": folder}), DPO, "dpo")
    expected = pairs(2, "a") + pairs(3, "b") + pairs(1, "c")
    assert sorted(bundle.train["prompt"]) == sorted(r["prompt"] for r in expected)


def test_directory_errors_name_the_file(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", pairs(2, "a"))
    bad = write_jsonl(folder / "b.jsonl", [pairs(1, "b")[0], {"prompt": "p", "chosen": "c"}])
    with pytest.raises(DataError, match=rf"{bad} line 2: missing 'rejected'"):
        load_data(data_cfg({"d": folder}), DPO, "dpo")


def test_empty_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"directory holds no data files"):
        load_data(data_cfg({"d": tmp_path / "empty"}), DPO, "dpo")


def test_unsupported_file_type(tmp_path):
    path = tmp_path / "pref.txt"
    path.write_text("hello")
    with pytest.raises(DataError, match=r"unsupported file type '\.txt'"):
        load_data(data_cfg({"t": path}), DPO, "dpo")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    with pytest.raises(DataError, match=r"'data\.train\.e'.*has no rows"):
        load_data(data_cfg({"e": path}), DPO, "dpo")


def test_column_mapping(tmp_path):
    rows = [{"question": f"q{i}", "good": f"g{i}", "bad": f"b{i}", "id": i} for i in range(3)]
    path = write_jsonl(tmp_path / "renamed.jsonl", rows)
    columns = {"question": "prompt", "good": "chosen", "bad": "rejected"}
    bundle = load_data(data_cfg({"r": SourceConfig(path=str(path), columns=columns)}), DPO, "dpo")
    assert bundle.format == "preference" and set(bundle.train.column_names) == {"prompt", "chosen", "rejected"}
    assert sorted(bundle.train.to_list(), key=str) == [
        {"prompt": f"q{i}", "chosen": f"g{i}", "rejected": f"b{i}"} for i in range(3)
    ]


def test_column_mapping_on_csv(tmp_path):
    path = tmp_path / "renamed.csv"
    path.write_text("question,good,bad\nq1,g1,b1\nq2,g2,b2\n")
    columns = {"question": "prompt", "good": "chosen", "bad": "rejected"}
    bundle = load_data(data_cfg({"r": SourceConfig(path=str(path), columns=columns)}), DPO, "dpo")
    assert sorted(bundle.train["chosen"]) == ["g1", "g2"]


def test_column_mapping_naming_an_absent_column(tmp_path):
    path = write_jsonl(tmp_path / "renamed.jsonl", [{"question": "q", "good": "g", "bad": "b"}])
    columns = {"query": "prompt", "good": "chosen", "bad": "rejected"}
    with pytest.raises(DataError) as err:
        load_data(data_cfg({"r": SourceConfig(path=str(path), columns=columns)}), DPO, "dpo")
    message = str(err.value)
    assert f"{path} line 1" in message and "'query'" in message
    assert "present: ['bad', 'good', 'question']" in message


@pytest.mark.parametrize("missing", ["./nope.jsonl", "nope.jsonl", "./no/such/dir", "~/no-such-align-train-file.csv"])
def test_missing_local_path_never_tries_the_hub(missing, no_hub, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as err:
        load_data(data_cfg({"mine": SourceConfig(path=missing)}), DPO, "dpo")
    message = str(err.value)
    assert "data.train.mine.path" in message and f"'{missing}'" in message and "does not exist" in message


def test_missing_eval_path_names_the_eval_key(tmp_path, no_hub):
    train = write_jsonl(tmp_path / "train.jsonl", pairs(3))
    with pytest.raises(DataError, match=r"data\.eval\.held\.path: file or directory './gone\.jsonl'"):
        load_data(data_cfg({"t": train}, eval={"held": SourceConfig(path="./gone.jsonl")}), DPO, "dpo")


def test_relative_path_resolves_from_the_working_directory(tmp_path, monkeypatch):
    write_jsonl(tmp_path / "pref.jsonl", pairs(3))
    monkeypatch.chdir(tmp_path)
    bundle = load_data(data_cfg({"p": SourceConfig(path="./pref.jsonl")}), DPO, "dpo")
    assert len(bundle.train) == 3


def test_json_array_file(tmp_path, no_hub):
    path = tmp_path / "pref.json"
    path.write_text(json.dumps(pairs(4), indent=2))
    bundle = load_data(data_cfg({"j": path}), DPO, "dpo")
    assert sorted(bundle.train["prompt"]) == sorted(r["prompt"] for r in pairs(4))


def test_json_object_file_is_a_clear_error(tmp_path):
    path = tmp_path / "pref.json"
    path.write_text(json.dumps({"data": pairs(2)}))
    with pytest.raises(DataError) as err:
        load_data(data_cfg({"j": path}), DPO, "dpo")
    message = str(err.value)
    assert str(path) in message and "expected a JSON array of objects" in message and ".jsonl" in message


def test_json_array_row_numbers(tmp_path):
    path = tmp_path / "pref.json"
    path.write_text(json.dumps(pairs(2) + [{"prompt": "p", "chosen": "c"}]))
    with pytest.raises(DataError, match=rf"{path} row 3: missing 'rejected'"):
        load_data(data_cfg({"j": path}), DPO, "dpo")
    path.write_text(json.dumps(pairs(2) + ["oops"]))
    with pytest.raises(DataError, match=rf"{path} row 3: expected an object, got str"):
        load_data(data_cfg({"j": path}), DPO, "dpo")


def test_malformed_json_file(tmp_path):
    path = tmp_path / "pref.json"
    path.write_text('[\n  {"prompt": "p",\n')
    with pytest.raises(DataError, match=rf"{path}: not valid JSON"):
        load_data(data_cfg({"j": path}), DPO, "dpo")


def test_plain_dataclass_config_works(tmp_path):
    path = write_jsonl(tmp_path / "pref.jsonl", pairs(4))
    cfg = DataConfig(train={"p": SourceConfig(path=str(path), columns={})}, eval_fraction=0.25)
    bundle = load_data(cfg, KTO, "kto")
    assert len(bundle.train) == 6 and len(bundle.eval) == 2


def test_max_eval_rows_caps_pairs_before_conversion(tmp_path):
    """A capped held-out set of converted pairs keeps whole pairs, the same ones the summary scores."""
    path = write_jsonl(tmp_path / "p.jsonl", pairs(20))
    bundle = load_data(data_cfg({"p": path}, eval_fraction=0.5, max_eval_rows=3), ("feedback",), "kto")
    assert len(bundle.heldout["preference"]) == 3
    assert len(bundle.eval) == 6 and sum(bundle.eval["label"]) == 3
    held_prompts = {r["prompt"] for r in bundle.heldout["preference"]}
    assert set(bundle.eval["prompt"]) == held_prompts


def test_byte_order_mark_is_tolerated(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes("\ufeff".encode() + "".join(json.dumps(r) + "\n" for r in pairs(3)).encode())
    assert len(read_source("data.train.bom", SourceConfig(path=str(path)), False).rows) == 3


def test_a_hub_dataset_name_goes_to_datasets_with_split_and_subset(monkeypatch):
    """Names that are not local paths load through datasets.load_dataset (stubbed: no network here)."""
    import datasets

    calls = []

    def fake_load_dataset(name, subset=None, split=None):
        calls.append((name, subset, split))
        return datasets.Dataset.from_list(pairs(3))

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    cfg = SourceConfig(path="someone/pairs", subset="clean", split="train_prefs", format="preference")
    rows = read_source("data.train.hub", cfg, False)
    assert calls == [("someone/pairs", "clean", "train_prefs")]
    assert len(rows.rows) == 3 and rows.format == "preference"


def test_an_unreachable_hub_dataset_says_so(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match="data.train.hub.path: 'someone/pairs' is not a local file or directory.*offline"):
        read_source("data.train.hub", SourceConfig(path="someone/pairs"), False)
