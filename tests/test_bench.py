"""The overhead benchmark compares like with like: the plain TRL baseline script and align-train,
given the same model, rows and settings, compute the same losses step by step."""

from __future__ import annotations

import json

import pytest

from align_train.paths import DATA_DIR
from bench.plain_trl_dpo import train as plain_trl_train
from bench.run import dpo_overrides, training_order, write_rows
from tests.conftest import run_recipe


def test_plain_trl_baseline_and_align_train_give_identical_losses(tmp_path):
    model = DATA_DIR / "tiny-llama"
    rows = [json.loads(line) for line in (DATA_DIR / "tiny" / "preference.jsonl").open()][:64]
    source = write_rows(rows, tmp_path / "pairs.jsonl")
    overrides = dpo_overrides(model, source, steps=3, global_batch=8, per_device=4)
    ordered = write_rows(training_order(source, overrides), tmp_path / "ordered.jsonl")

    run_recipe(tmp_path / "align", *overrides)
    ours = [json.loads(line)["loss"] for line in (tmp_path / "align" / "metrics.jsonl").open() if '"loss"' in line]
    trainer = plain_trl_train(model=str(model), rows=str(ordered), out=str(tmp_path / "trl"), steps=3,
                              global_batch=8, per_device=4)
    theirs = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(ours) == len(theirs) == 3
    assert ours == pytest.approx(theirs, abs=1e-5)
    assert ours[0] != pytest.approx(ours[-1], abs=1e-4), "the losses moved: the runs trained"
