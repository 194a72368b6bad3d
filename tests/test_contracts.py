"""The plug-in contracts and the model-reading layer.

Every reader of a model sees a prompt as the same token ids; objectives declare (not copy) the settings
they pass to TRL, checked against TRL's own config; group configs do not repeat schema defaults; each
evaluation suite is registered once; each tuning strategy owns where its results are and how they load.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

from align_train import config as schema
from align_train.config import GenerationConfig
from align_train.inference import generate, prompt_ids
from align_train.objectives import OBJECTIVES, make_objective, udm
from align_train.paths import CONF_DIR
from align_train.tuning.nest.probe import pooled_activations
from tests.conftest import compose_config

PROMPT = "How do I pick a lock without the key?"


@pytest.fixture(scope="module")
def tiny():
    from align_train.models import load_model, load_tokenizer

    cfg = compose_config().model
    return load_model(cfg).eval(), load_tokenizer(cfg)


def seen_ids(model, read) -> list[list[int]]:
    """The token ids of every forward the model runs while ``read()`` reads it (padding removed)."""
    seen = []

    def hook(module, args, kwargs):
        ids, mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
        if ids is not None and ids.shape[1] > 1:  # generation's later steps feed one token at a time
            seen.extend(row[m.bool()].tolist() if m is not None else row.tolist()
                        for row, m in zip(ids, mask if mask is not None else [None] * len(ids)))

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        read()
    finally:
        handle.remove()
    return seen


def test_nest_udm_and_the_refusal_suite_read_a_prompt_as_the_same_token_ids(tiny):
    model, tokenizer = tiny
    as_messages = [{"role": "user", "content": PROMPT}]  # how a training row holds it
    nest = seen_ids(model, lambda: pooled_activations(model, tokenizer, [PROMPT], batch_size=1, max_length=256))
    bco = seen_ids(model, lambda: udm.embed_prompts(model, tokenizer, [as_messages], 1, use_chat_template=True))
    refusal = seen_ids(model, lambda: generate(model, tokenizer, [PROMPT], GenerationConfig(max_new_tokens=2)))
    expected = prompt_ids(tokenizer, PROMPT)
    assert nest == bco == refusal == [expected]
    assert tokenizer.decode(expected).count(PROMPT) == 1


def test_batching_does_not_change_what_a_prompt_reads_as(tiny):
    model, tokenizer = tiny
    prompts = [PROMPT, "Hi", "Write a long poem about the sea, the wind and the gulls at dawn."]
    alone = [seen_ids(model, lambda p=p: pooled_activations(model, tokenizer, [p], 1, 256))[0] for p in prompts]
    batched = seen_ids(model, lambda: pooled_activations(model, tokenizer, prompts, 3, 256))
    assert batched == alone


# --------------------------------------------------------------------------- objectives declare, not copy


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_pass_through_settings_are_fields_of_trls_config(name):
    """A setting marked as TRL's (config.trl) must exist under that name in the objective's TRL config:
    a renamed or removed TRL field fails here, not in a user's run."""
    trl_fields = {f.name for f in dataclasses.fields(OBJECTIVES[name].config_class)}
    declared = [f.name for f in dataclasses.fields(schema.OBJECTIVE_SCHEMAS[name]) if f.metadata.get("trl")]
    assert set(declared) <= trl_fields, sorted(set(declared) - trl_fields)


def test_pass_through_settings_reach_the_trl_config_unchanged():
    cfg = compose_config("objective.beta=0.37", "objective.loss_type=[hinge]", "objective.ref_model_sync_steps=7",
                         output_dir="/tmp/unused")
    from align_train.training_args import common_trainer_args

    objective = make_objective(cfg.objective)
    args = objective.make_args(common_trainer_args(cfg, "/tmp/unused", 1), type("D", (), {"format": "preference"})())
    for field in dataclasses.fields(schema.DPOObjectiveConfig):
        if field.metadata.get("trl"):
            expected = getattr(cfg.objective, field.name)
            expected = list(expected) if hasattr(expected, "__len__") and not isinstance(expected, str) else expected
            assert getattr(args, field.name) == expected, field.name


def _defaults(cls) -> dict:
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
            out[f.name] = _defaults(type(value)) if dataclasses.is_dataclass(value) else value
    return out


def _repeats(values: dict, defaults: dict, prefix: str = "") -> list[str]:
    found = []
    for key, value in values.items():
        if key == "defaults" or key not in defaults:
            continue
        if isinstance(value, dict) and isinstance(defaults[key], dict):
            found += _repeats(value, defaults[key], f"{prefix}{key}.")
        elif value == defaults[key]:
            found.append(f"{prefix}{key}")
    return found


@pytest.mark.parametrize("group,registry", [("objective", schema.OBJECTIVE_SCHEMAS),
                                            ("tuning", schema.TUNING_SCHEMAS)])
def test_group_configs_do_not_repeat_schema_defaults(group, registry):
    for path in sorted((CONF_DIR / group).glob("*.yaml")):
        content = yaml.safe_load(path.read_text()) or {}
        if path.stem in registry:
            assert not _repeats(content, _defaults(registry[path.stem])), path


def test_model_and_logger_configs_do_not_repeat_schema_defaults():
    for group, cls in (("model", schema.ModelConfig), ("logger", schema.LoggerConfig)):
        for path in sorted((CONF_DIR / group).glob("*.yaml")):
            assert not _repeats(yaml.safe_load(path.read_text()) or {}, _defaults(cls)), path


# --------------------------------------------------------------------------- suites and strategies


def test_each_evaluation_suite_is_registered_once_with_its_settings():
    from align_train.evaluation.suites import HEADLINE, SUITES

    eval_fields = {f.name for f in dataclasses.fields(schema.EvalConfig)}
    assert set(SUITES) <= eval_fields
    assert len(HEADLINE) == len(set(HEADLINE)), "two suites claim one metric"
    assert all(suite.headline for suite in SUITES.values())


def test_tuning_strategies_own_where_their_results_are_and_how_they_load(tmp_path):
    from align_train.run_dir import RunDir
    from align_train.tuning import TUNING_STRATEGIES, load_trained_model, make_tuning

    run = RunDir(tmp_path)
    lora = make_tuning(compose_config("tuning=lora").tuning)
    assert lora.final_model(run) == run.final_merged
    assert make_tuning(compose_config().tuning).final_model(run) == run.final
    (tmp_path / "adapter_config.json").write_text("{}")
    assert TUNING_STRATEGIES["lora"].claims(tmp_path) and not TUNING_STRATEGIES["nest"].claims(tmp_path)
    model = load_trained_model(compose_config().model.name_or_path, compose_config().model)
    assert isinstance(model, torch.nn.Module)
    assert Path(run.checkpoint(3)).name == "checkpoint-3" and run.stage(1, "sft").root == tmp_path / "stages" / "1-sft"
