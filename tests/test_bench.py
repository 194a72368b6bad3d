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


def test_real_architecture_counts_apply_lora_and_nest_on_the_meta_device():
    """docs/performance.md's LoRA and NeST counts for 8B-class models: each strategy applied to the real
    architecture on the meta device (nothing allocated), checked against the closed forms."""
    import torch
    from omegaconf import OmegaConf
    from transformers import AutoConfig, AutoModelForCausalLM

    from align_train.config import NestTuningConfig
    from bench.run import REAL_ARCHITECTURES, nest_on_meta, real_architecture_counts

    counts = real_architecture_counts()
    for name, (_, shape) in REAL_ARCHITECTURES.items():
        hidden, inter, layers = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
        kv = hidden // shape["num_attention_heads"] * shape["num_key_value_heads"]
        # r x (in + out) for q, k, v, o, gate, up, down of every layer
        lora = layers * 16 * (2 * (hidden + hidden) + 2 * (hidden + kv) + 3 * (hidden + inter))
        assert counts[name]["lora"] == lora
        assert counts[name]["nest"] == layers * 3 * hidden  # down columns, 3 clusters a layer
    assert counts["Llama-3-8B"]["total"] == 8_030_261_248

    # NeST's own parametrisation counts what it is given: gate and up rows too triple it.
    config = AutoConfig.for_model("llama", **REAL_ARCHITECTURES["Llama-3-8B"][1])
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    cfg = OmegaConf.structured(NestTuningConfig(weights=["down", "gate", "up"]))
    trainable = [p for p in nest_on_meta(model, cfg).parameters() if p.requires_grad]
    assert all(p.is_meta for p in trainable)
    assert sum(p.numel() for p in trainable) == 3 * counts["Llama-3-8B"]["nest"]
