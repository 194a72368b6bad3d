"""Model families: the random-weight miniatures of Llama 3, Qwen2.5, Qwen3, Mistral, Gemma 3 and Phi-3.

Every objective (SFT, DPO, KTO, BCO) runs with every strategy (full, LoRA, NeST) on every family: 72
parametrised cases, each a real run of one optimiser step on a handful of rows, checking what moved: every weight under full tuning, the adapter of every linear layer under
LoRA's all-linear (and nothing else), the cluster vectors of the family's MLP blocks under NeST.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig, set_seed

from align_train.paths import DATA_DIR
from tests.conftest import compose_config, run_recipe

FAMILIES = {  # model_type -> (reference checkpoint, its MLP's projections, attention projections)
    "llama": ("meta-llama/Meta-Llama-3-8B-Instruct", {"gate_proj", "up_proj", "down_proj"},
              {"q_proj", "k_proj", "v_proj", "o_proj"}),
    "qwen2": ("Qwen/Qwen2.5-0.5B-Instruct", {"gate_proj", "up_proj", "down_proj"}, {"q_proj", "k_proj", "v_proj", "o_proj"}),
    "qwen3": ("Qwen/Qwen3-0.6B", {"gate_proj", "up_proj", "down_proj"}, {"q_proj", "k_proj", "v_proj", "o_proj"}),
    "mistral": ("mistralai/Mistral-7B-Instruct-v0.3", {"gate_proj", "up_proj", "down_proj"},
                {"q_proj", "k_proj", "v_proj", "o_proj"}),
    "gemma3_text": ("google/gemma-3-1b-it", {"gate_proj", "up_proj", "down_proj"}, {"q_proj", "k_proj", "v_proj", "o_proj"}),
    "phi3": ("microsoft/Phi-3-mini-4k-instruct", {"gate_up_proj", "down_proj"}, {"qkv_proj", "o_proj"}),
}
# The token that ends an assistant turn in each family's published template.
TURN_END = {"llama": "<|eot_id|>", "qwen2": "<|im_end|>", "qwen3": "<|im_end|>", "mistral": "</s>",
            "gemma3_text": "<end_of_turn>", "phi3": "<|end|>"}
ONE_STEP = ["train.max_steps=1", "eval=none", "data.eval_fraction=0", "train.global_batch_size=4",
            "train.per_device_batch_size=4", "train.warmup_ratio=0", "train.lr_scheduler=constant",
            "model.max_length=128"]
STRATEGY = {"full": [], "lora": ["tuning.target_modules=[all-linear]"],
            "nest": ["tuning.harmful.max_prompts=16", "tuning.harmless.max_prompts=16"]}


def model_dir(family: str) -> Path:
    return DATA_DIR / "tiny-random" / family


def initial_weights(family: str, seed: int = 42) -> dict[str, torch.Tensor]:
    """The weights the run starts from: model.init=random builds them from the config after set_seed."""
    set_seed(seed)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir(family)))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def linear_layers(family: str) -> set[str]:
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir(family)))
    return {name for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and name != "lm_head"}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_miniature_is_the_family(family):
    """Its real model_type and architecture, special tokens, end-of-sequence ids and template."""
    reference, mlp, attention = FAMILIES[family]
    cfg = compose_config(f"model=tiny-random-{family}").model
    assert cfg.init == "random" and Path(cfg.name_or_path) == model_dir(family)
    config = AutoConfig.from_pretrained(model_dir(family))
    assert config.model_type == family and config.num_hidden_layers == 2 and config.hidden_size == 64
    assert not list(model_dir(family).glob("*.safetensors")), "weights are built at load time, never shipped"
    leaves = {name.rsplit(".", 1)[-1] for name in linear_layers(family)}
    assert leaves == mlp | attention

    from align_train.models import load_tokenizer, template_stop_problem

    tokenizer = load_tokenizer(cfg)
    end = tokenizer.convert_tokens_to_ids(TURN_END[family])
    assert end in GenerationConfig.from_pretrained(model_dir(family)).eos_token_id
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Zq9"}],
                                         tokenize=False)
    assert text.split("Zq9", 1)[1].startswith(TURN_END[family])
    assert template_stop_problem(tokenizer) is None, "the published template ends turns on a stop token"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_assistant_only_loss_trains_the_turns_end(family):
    """SFT's assistant mask (TRL's patched template, or the preset) covers the token that ends the turn."""
    from trl.chat_template_utils import get_training_chat_template, is_chat_template_stop_token_trained

    from align_train.models import load_tokenizer

    tokenizer = load_tokenizer(compose_config(f"model=tiny-random-{family}").model)
    template = get_training_chat_template(tokenizer) or tokenizer.chat_template
    assert is_chat_template_stop_token_trained(tokenizer, chat_template=template)


@pytest.mark.parametrize("strategy", ["full", "lora", "nest"])
@pytest.mark.parametrize("objective", ["sft", "dpo", "kto", "bco"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_objective_with_every_strategy_moves_the_right_weights(family, objective, strategy, tmp_path):
    data = "tiny_sft" if objective == "sft" else "tiny_preference"
    out = tmp_path / "run"
    result = run_recipe(out, f"recipe=tiny/{objective}", f"model=tiny-random-{family}", f"tuning={strategy}",
                        f"data.train.{data}.weight=0.02", *ONE_STEP, *STRATEGY[strategy])
    where = f"{family} {objective} + {strategy}"
    assert result.steps == 1 and torch.isfinite(torch.tensor(result.train_loss)), where
    final = out / "final"
    if strategy == "full":
        start = initial_weights(family)
        trained = load_file(str(final / "model.safetensors"))
        moved = [k for k in trained if not torch.equal(trained[k], start[k])]
        assert len(moved) >= len(trained) - 1, f"{where}: only {len(moved)} of {len(trained)} tensors moved"
    elif strategy == "lora":
        linear = linear_layers(family)
        adapter = json.loads((final / "adapter_config.json").read_text())
        assert set(adapter["target_modules"]) == linear, where  # all-linear: every linear layer but the head
        weights = load_file(str(final / "adapter_model.safetensors"))
        lora_b = {k for k, v in weights.items() if "lora_B" in k and v.abs().sum() > 0}
        assert {k.split("base_model.model.")[1].rsplit(".lora_B", 1)[0] for k in lora_b} == linear, where
    else:
        start, mlp = initial_weights(family), FAMILIES[family][1]
        adapter = load_file(str(final / "nest_adapter.safetensors"))
        deltas = {k: v for k, v in adapter.items() if ".delta." in k}
        blocks = {k.split(".delta.")[0] for k in deltas}
        assert blocks and all(b.endswith(".mlp") for b in blocks), f"{where}: {sorted(blocks)}"
        assert all(v.abs().sum() > 0 for v in deltas.values()), f"{where}: a cluster vector did not move"
        folded = load_file(str(final / "model.safetensors"))
        moved = {k for k in folded if not torch.equal(folded[k], start[k])}
        assert moved and all(k.rsplit(".", 2)[-2] in mlp and ".mlp." in k for k in moved), (where, moved)
    assert AutoTokenizer.from_pretrained(final).chat_template, where
