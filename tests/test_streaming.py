"""Streamed midtraining corpora: read as training reaches them, mixed by weight, errors named when found."""

from __future__ import annotations

import json
from itertools import islice

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from align_train.data import load_data
from align_train.data.streaming import SHUFFLE_BUFFER
from align_train.errors import ConfigError, DataError
from align_train.objectives import make_objective
from tests.conftest import compose_config, run_recipe

MIDTRAIN = ["recipe=tiny/msm_pipeline", "stages=[]", "eval=none"]


def corpus(path, rows: int, bad_at: int | None = None, column: str = "text"):
    """``rows`` documents tagged 'general N'; row ``bad_at`` (1-based) has an empty text."""
    with open(path, "w") as handle:
        for n in range(1, rows + 1):
            handle.write(json.dumps({column: "" if n == bad_at else f"general {n} some plain text", "id": n}) + "\n")
    return str(path)


def streamed(path, *extra: str):
    return compose_config(*MIDTRAIN, f"data.train.general.path={path}", "data.train.general.streaming=true",
                          "train.max_steps=4", *extra)


def bundle(cfg):
    objective = make_objective(cfg.objective)
    return load_data(cfg.data, objective.accepts, objective.name)


def test_a_streamed_source_is_drawn_by_weight_and_never_held_out(tmp_path):
    path = corpus(tmp_path / "general.jsonl", 5000)
    data = bundle(streamed(path, "data.train.general.weight=3", "data.train.spec_docs.weight=1"))
    from datasets import IterableDataset

    assert isinstance(data.train, IterableDataset)
    rows = [row["text"] for row in islice(iter(data.train), 400)]
    general = sum(text.startswith("general ") for text in rows)
    assert 0.75 - 0.08 < general / len(rows) < 0.75 + 0.08  # weight 3 of 4
    assert len(set(rows)) > 350, "the spec documents restart only once they are used up"
    report = data.report
    assert report["streamed"] and report["train_rows"] is None
    assert report["sources"]["general"]["streamed"] and report["sources"]["general"]["share"] == 0.75
    assert report["sources"]["general"]["heldout_rows"] == 0
    # The held-out rows come from the source read whole (here its explicit eval set), as without streaming.
    assert report["eval_rows"] == 6
    # The same seed gives the same stream; another seed another order.
    assert rows == [r["text"] for r in islice(iter(bundle(streamed(path, "data.train.general.weight=3")).train), 400)]
    other = [r["text"] for r in islice(iter(bundle(streamed(path, "data.train.general.weight=3", "data.seed=7")).train),
                                       400)]
    assert other != rows


def test_a_stream_is_read_as_far_as_training_goes_and_names_a_bad_row_when_it_gets_there(tmp_path):
    # An empty document at row 15,000: loading the data and the first batches (which fill the 10,000-row shuffle
    # buffer) never reach it.
    assert SHUFFLE_BUFFER == 10_000
    path = corpus(tmp_path / "general.jsonl", 20_000, bad_at=15_000)
    data = bundle(streamed(path, "data.train.general.weight=1", "data.train.spec_docs.weight=0.001"))
    assert len(list(islice(iter(data.train), 50))) == 50
    with pytest.raises(DataError, match=r"data source 'data\.train\.general': \S*general\.jsonl row 15000: 'text' must "
                                        r"be a non-empty string .*data\.skip_invalid_rows=true"):
        list(islice(iter(data.train), 20_000))
    # With skip_invalid_rows the row is left out and the stream goes on.
    data = bundle(streamed(path, "data.train.general.weight=1", "data.train.spec_docs.weight=0.001", "data.skip_invalid_rows=true"))
    texts = [r["text"] for r in islice(iter(data.train), 20_000)]
    assert "" not in texts and sum(t.startswith("general ") for t in texts) > 19_900


def test_a_streamed_hub_layout_directory_with_its_own_column_name_trains(tmp_path):
    folder = tmp_path / "corpus" / "data"
    folder.mkdir(parents=True)
    (folder / "train-00000-of-00001.jsonl").write_text(
        "".join(json.dumps({"content": f"web document {n} with words", "url": "x"}) + "\n" for n in range(300)))
    result = run_recipe(tmp_path / "run", *MIDTRAIN, f"data.train.general.path={tmp_path / 'corpus'}",
                        "data.train.general.streaming=true", "+data.train.general.columns.content=text",
                        "train.max_steps=3", "train.save_steps=0")
    assert result.steps == 3
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    assert report["sources"]["general"]["streamed"] and report["sources"]["general"]["layout"] == "documents"
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["data"]["streamed"] is True


def test_a_parquet_corpus_in_hub_layout_streams(tmp_path):
    folder = tmp_path / "corpus" / "data"
    folder.mkdir(parents=True)
    table = pa.table({"text": [f"parquet document {n}" for n in range(300)], "url": ["x"] * 300})
    pq.write_table(table, folder / "train-00000-of-00001.parquet")
    data = bundle(streamed(tmp_path / "corpus", "data.train.general.weight=1", "data.train.spec_docs.weight=0.001"))
    texts = [row["text"] for row in islice(iter(data.train), 100)]
    assert sum(t.startswith("parquet document ") for t in texts) >= 95 and len(set(texts)) == 100


@pytest.mark.parametrize("overrides, message", [
    (["recipe=tiny/dpo", "data.train.tiny_preference.streaming=true", "train.max_steps=4"],
     r"data\.train\.tiny_preference\.streaming=true: streaming is for midtraining.*objective=dpo"),
    ([*MIDTRAIN, "data.train.general.streaming=true"],
     r"data\.train\.general\.streaming=true: a stream has no length, so train\.max_steps"),
    ([*MIDTRAIN, "data.train.general.streaming=true", "train.max_steps=4", "data.eval.spec_paraphrases.streaming=true"],
     r"data\.eval\.spec_paraphrases\.streaming=true: a held-out set is read whole"),
])
def test_streaming_where_it_cannot_work_is_refused_before_loading(overrides, message):
    from align_train.train import validate_config

    with pytest.raises(ConfigError, match=message):
        validate_config(compose_config(*overrides, "model.name_or_path=/nonexistent"))


def test_a_stream_that_is_not_documents_is_refused_with_its_columns(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n")
    with pytest.raises(DataError, match=r"data\.train\.general\.streaming=true: only documents .* has columns "
                                        r"prompt, chosen, rejected \(layout 'preference'\)"):
        bundle(streamed(path))
    with pytest.raises(DataError, match=r"data\.train\.general\.path: file or directory 'missing\.jsonl' does not"):
        bundle(streamed("missing.jsonl"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match=r"data source 'data\.train\.general' .*empty\.jsonl.* has no rows"):
        bundle(streamed(empty))

