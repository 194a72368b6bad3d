"""peft's LoRA variants through align-train: every LoRA setting reaches adapter_config.json, target-module presets
resolve per family, DoRA and rsLoRA change the adapter, and QLoRA trains adapters over a 4-bit base."""

from __future__ import annotations

import dataclasses
import json
import math
import sys

import pytest
import yaml
from safetensors.torch import load_file

from align_train.config import LoraTuningConfig
from align_train.errors import ConfigError
from tests.conftest import compose_config, run_recipe

# Each LoRA setting and the adapter_config.json field it becomes (peft's name).
ADAPTER_FIELDS = {"r": "r", "alpha": "lora_alpha", "dropout": "lora_dropout", "target_modules": "target_modules",
                  "bias": "bias", "use_rslora": "use_rslora", "use_dora": "use_dora",
                  "modules_to_save": "modules_to_save"}
# Settings that are not the adapter's, with why.
NOT_ADAPTER = {"name": "selects the strategy", "save_merged": "writes final-merged/ beside the adapter"}
CHANGED = ["tuning.r=4", "tuning.alpha=8", "tuning.dropout=0.1", "tuning.target_modules=[attention]",
           "tuning.bias=lora_only", "tuning.use_rslora=true", "tuning.use_dora=true", "tuning.modules_to_save=[norm]"]
ONE_STEP = ["train.max_steps=1", "eval=none", "data.eval_fraction=0", "train.warmup_ratio=0",
            "data.train.tiny_preference.weight=0.03", "train.global_batch_size=8"]


def test_every_lora_setting_in_config_yaml_reaches_adapter_config_json(tmp_path):
    assert {f.name for f in dataclasses.fields(LoraTuningConfig)} == set(ADAPTER_FIELDS) | set(NOT_ADAPTER), (
        "a new LoRA setting: map it to its adapter_config.json field here, or say why it is not the adapter's")
    assert len(CHANGED) == len(ADAPTER_FIELDS)  # each adapter setting away from its default
    run_recipe(tmp_path, "recipe=tiny/dpo", "tuning=lora", *CHANGED, *ONE_STEP)
    recorded = yaml.safe_load((tmp_path / "config.yaml").read_text())["tuning"]
    adapter = json.loads((tmp_path / "final" / "adapter_config.json").read_text())
    defaults = LoraTuningConfig()
    for setting, field in ADAPTER_FIELDS.items():
        assert recorded[setting] != getattr(defaults, setting), setting
        if setting == "target_modules":  # the preset, resolved against the model
            assert recorded[setting] == ["attention"]
            assert set(adapter[field]) == {"q_proj", "k_proj", "v_proj", "o_proj"}
        else:
            assert adapter[field] == recorded[setting], setting

    # and they act: DoRA's magnitude vectors, the norms trained in full, rsLoRA's alpha / sqrt(r) scaling
    weights = load_file(str(tmp_path / "final" / "adapter_model.safetensors"))
    assert any("lora_magnitude_vector" in k for k in weights)
    assert any("norm" in k and "modules_to_save" not in k for k in weights)
    from align_train.tuning import load_trained_model

    model = load_trained_model(str(tmp_path / "final"), compose_config().model, "lora")
    scaling = model.base_model.model.model.layers[0].self_attn.q_proj.scaling["default"]
    assert scaling == pytest.approx(8 / math.sqrt(4))


def resolve(family: str, targets: str):
    from transformers import AutoConfig, AutoModelForCausalLM

    from align_train.paths import DATA_DIR
    from align_train.tuning import make_tuning

    cfg = compose_config("tuning=lora", f"tuning.target_modules={targets}").tuning
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(DATA_DIR / "tiny-random" / family))
    return make_tuning(cfg).resolve_targets(model)


def test_target_presets_resolve_to_each_familys_projections():
    assert resolve("llama", "[attention,mlp]") == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                   "down_proj"]
    assert resolve("phi3", "[attention]") == ["o_proj", "qkv_proj"]  # Phi-3 fuses q, k and v
    assert resolve("phi3", "[mlp]") == ["down_proj", "gate_up_proj"]  # and gate with up
    assert resolve("gemma3_text", "[mlp,q_proj]") == ["gate_proj", "up_proj", "down_proj", "q_proj"]
    assert resolve("qwen3", "[all-linear]") == ["all-linear"]
    with pytest.raises(ConfigError, match=r"'q_proj' matches no module of Phi3ForCausalLM; its linear layers are: "
                                          r"down_proj, gate_up_proj, lm_head, o_proj, qkv_proj"):
        resolve("phi3", "[q_proj]")


def test_the_default_targets_fit_a_family_with_fused_projections(tmp_path):
    """The old default (q_proj ... down_proj by name) failed on Phi-3; the presets adapt its fused layers."""
    run_recipe(tmp_path, "recipe=tiny/dpo", "tuning=lora", "model=tiny-random-phi3", *ONE_STEP)
    adapter = json.loads((tmp_path / "final" / "adapter_config.json").read_text())
    assert set(adapter["target_modules"]) == {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}


def test_all_linear_stands_alone():
    from align_train.tuning import make_tuning

    with pytest.raises(ConfigError, match="'all-linear' already covers every linear layer"):
        make_tuning(compose_config("tuning=lora", "tuning.target_modules=[all-linear,q_proj]").tuning).validate()


# --------------------------------------------------------------------------- QLoRA


def test_qlora_trains_adapters_over_a_4bit_base_on_the_cpu(tmp_path):
    """bitsandbytes' CPU backend runs 4-bit training; the base layers are quantised and stay frozen."""
    bnb = pytest.importorskip("bitsandbytes")
    from transformers import TrainerCallback

    from align_train.train import run

    seen = {}

    class Inspect(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            layer = model.base_model.model.model.layers[0].self_attn.q_proj
            seen["base"] = type(layer.base_layer)
            seen["frozen"] = not any(p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)

    cfg = compose_config("recipe=tiny/dpo", "tuning=lora", "model.quantization=nf4", *ONE_STEP, "train.max_steps=2",
                         output_dir=tmp_path)
    result = run(cfg, callbacks=[Inspect()])
    assert seen == {"base": bnb.nn.Linear4bit, "frozen": True}
    assert result.steps == 2 and math.isfinite(result.train_loss)
    weights = load_file(str(tmp_path / "final" / "adapter_model.safetensors"))
    assert any(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k), "the adapters trained"


@pytest.mark.parametrize("overrides, expected", [
    (["tuning=full", "model.quantization=nf4"], r"model.quantization=nf4 .* tuning=full .* needs tuning=lora"),
    (["tuning=nest", "model.quantization=nf4"], r"model.quantization=nf4 .* tuning=nest"),
    (["tuning=lora", "model.quantization=int3"], r"model.quantization is 'int3'; expected one of nf4, fp4"),
    (["tuning=lora", "model.quantization=nf4", "model=tiny-random"], r"model.init=random builds new ones"),
    (["tuning=lora", "model.quantization=fp4", "tuning.save_merged=true"], r"tuning.save_merged=true with "
                                                                            r"model.quantization=fp4"),
])
def test_quantisation_is_refused_where_it_cannot_run(overrides, expected):
    from align_train.train import validate_config

    with pytest.raises(ConfigError, match=expected):
        validate_config(compose_config("recipe=tiny/dpo", *overrides))


def test_quantisation_without_bitsandbytes_names_the_key_and_the_reason(monkeypatch):
    from align_train.train import validate_config

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"model.quantization=nf4 needs bitsandbytes, which cannot load here "
                                          r"\((ModuleNotFoundError|ImportError).*pip install 'align-train\[qlora\]'"):
        validate_config(compose_config("recipe=tiny/dpo", "tuning=lora", "model.quantization=nf4"))
