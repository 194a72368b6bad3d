"""Models load through one transformers path (hub id or local directory), honour the config, and save
as standard safetensors directories."""

from __future__ import annotations

import torch
from datasets import Dataset

from align_train.data import DataBundle
from align_train.models import count_parameters, load_model, load_tokenizer, save_model
from align_train.objectives import make_objective
from align_train.training_args import common_trainer_args
from tests.conftest import compose_config


def test_config_controls_dtype_attention_and_init():
    cfg = compose_config("model.dtype=bfloat16", "model.attn_implementation=eager").model
    model = load_model(cfg)
    assert next(model.parameters()).dtype == torch.bfloat16
    assert model.config._attn_implementation == "eager"
    pretrained = load_model(compose_config().model)
    random = load_model(compose_config("model=tiny-random").model)
    assert count_parameters(random) == count_parameters(pretrained)
    assert not torch.equal(random.model.embed_tokens.weight, pretrained.model.embed_tokens.weight)


def test_a_saved_model_loads_back_from_its_directory(tmp_path):
    """A local directory goes through the same from_pretrained path as a hub id."""
    cfg = compose_config().model
    model, tokenizer = load_model(cfg), load_tokenizer(cfg)
    with torch.no_grad():
        model.model.norm.weight.add_(1.0)
    save_model(model, tokenizer, str(tmp_path))
    assert (tmp_path / "model.safetensors").is_file() and not list(tmp_path.glob("*.bin"))
    reloaded = load_model(compose_config(f"model.name_or_path={tmp_path}").model)
    assert torch.equal(reloaded.model.norm.weight, model.model.norm.weight)
    assert load_tokenizer(compose_config(f"model.name_or_path={tmp_path}").model).chat_template


def test_gradient_checkpointing_reaches_the_trainer(tmp_path):
    for enabled in (True, False):
        cfg = compose_config("recipe=tiny/sft", f"model.gradient_checkpointing={str(enabled).lower()}")
        objective, tokenizer = make_objective(cfg.objective), load_tokenizer(cfg.model)
        rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}] * 4
        data = DataBundle(format="messages", train=Dataset.from_list(rows), eval=None)
        args = objective.make_args(common_trainer_args(cfg, str(tmp_path), 1), data)
        trainer = objective.build_trainer(load_model(cfg.model), None, tokenizer, data, args, [])
        trainer.train()
        assert trainer.model.is_activation_checkpointing is enabled
