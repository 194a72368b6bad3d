"""objective=midtrain: every token of packed documents trained, mixed with general text, spec content learned."""

from __future__ import annotations

import pytest

from align_train.data import load_data
from align_train.errors import DataError
from align_train.objectives import make_objective
from tests.conftest import compose_config, run_recipe

MIDTRAIN = ["recipe=tiny/msm_pipeline", "stages=[]", "eval=default"]


def test_midtrain_args_pack_and_train_every_token():
    cfg = compose_config(*MIDTRAIN)
    objective = make_objective(cfg.objective)
    data = load_data(cfg.data, objective.accepts, objective.name)
    args = objective.make_args({"output_dir": "unused", "use_cpu": True, "report_to": []}, data)
    assert args.packing and args.packing_strategy == "wrapped"
    assert not args.assistant_only_loss and not args.completion_only_loss
    # The general corpus joins at its weight: 240 spec documents + 0.03 x 5600 pre-training rows.
    sources = data.report["sources"]
    assert sources["spec_docs"]["train_rows"] == 240 and sources["general"]["train_rows"] == 168
    assert data.report["train_rows"] == 408 and data.report["eval_rows"] == 6  # the paraphrases


def test_midtrain_refuses_chat_data():
    cfg = compose_config(*MIDTRAIN, "data=tiny_sft")
    objective = make_objective(cfg.objective)
    with pytest.raises(DataError, match="trains on documents data"):
        load_data(cfg.data, objective.accepts, objective.name)


@pytest.mark.slow
def test_midtraining_lowers_perplexity_of_heldout_spec_paraphrases(tmp_path):
    result = run_recipe(tmp_path, *MIDTRAIN, "train.max_steps=8", "train.learning_rate=1e-3")
    assert result.objective == "midtrain" and result.data["eval_rows"] == 6
    before, after = result.before["perplexity"], result.after["perplexity"]
    # The paraphrases share no sentence with the training documents (scripts/make_msm_data.py checks it).
    assert after < 0.5 * before, (before, after)


@pytest.mark.slow
@pytest.mark.parametrize("tuning", ["lora", "freeze"])
def test_midtrain_with_other_tuning_strategies(tmp_path, tuning):
    extra = ["tuning.trainable=[mlp]"] if tuning == "freeze" else []
    result = run_recipe(tmp_path, *MIDTRAIN, f"tuning={tuning}", *extra, "train.max_steps=3",
                        "train.learning_rate=1e-3")
    assert result.tuning == tuning and result.steps == 3
    assert result.after["perplexity"] < result.before["perplexity"]
