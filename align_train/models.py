"""Loading, building and saving models and tokenizers through transformers.

One path for every model: a hub id, a local directory, or the embedded tiny model (a
local directory shipped in ``data/tiny-llama``). Weights are read and written as
safetensors only, and remote code runs only when the user sets ``trust_remote_code``.
"""

from __future__ import annotations

import copy

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from align_train.errors import ConfigError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}
INITS = ("pretrained", "random")


def ensure_pad_token(tokenizer) -> PreTrainedTokenizerBase:
    """Batched training, scoring and generation need a pad token; models often ship without one (EOS serves)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer(model_cfg) -> PreTrainedTokenizerBase:
    """The tokenizer, with a pad token guaranteed."""
    return ensure_pad_token(AutoTokenizer.from_pretrained(
        model_cfg.tokenizer or model_cfg.name_or_path,
        revision=model_cfg.revision,
        trust_remote_code=model_cfg.trust_remote_code,
    ))


def load_model(model_cfg) -> PreTrainedModel:
    """The causal LM named by the config, pretrained weights or freshly initialised from its config."""
    if model_cfg.init not in INITS:
        raise ConfigError(f"model.init is '{model_cfg.init}'; expected one of {', '.join(INITS)}")
    kwargs = {"dtype": DTYPES[model_cfg.dtype], "trust_remote_code": model_cfg.trust_remote_code}
    if model_cfg.attn_implementation:
        kwargs["attn_implementation"] = model_cfg.attn_implementation
    if model_cfg.init == "random":
        config = AutoConfig.from_pretrained(
            model_cfg.name_or_path, revision=model_cfg.revision, trust_remote_code=model_cfg.trust_remote_code
        )
        return AutoModelForCausalLM.from_config(config, **kwargs)
    return AutoModelForCausalLM.from_pretrained(
        model_cfg.name_or_path, revision=model_cfg.revision, use_safetensors=True, **kwargs
    )


def frozen_copy(model: PreTrainedModel) -> PreTrainedModel:
    """An independent, frozen, eval-mode copy: the reference model of DPO / KTO under full-type tuning."""
    reference = copy.deepcopy(model)
    reference.eval()
    reference.requires_grad_(False)
    return reference


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, directory: str) -> None:
    """A standard transformers directory (safetensors + config + tokenizer) loadable by from_pretrained."""
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
