"""Loading, building and saving models and tokenizers through transformers.

One path for every model: a hub id, a local directory, or the embedded tiny model (a
local directory shipped in ``data/tiny-llama``). Weights are read and written as
safetensors only, and remote code runs only when the user sets ``trust_remote_code``.
"""

from __future__ import annotations

import copy
import importlib
import os
import re
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from align_train.errors import ConfigError
from align_train.paths import DATA_DIR

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}
INITS = ("pretrained", "random")
QUANTIZATIONS = ("nf4", "fp4")  # bitsandbytes' 4-bit data types (QLoRA uses nf4)
CHAT_TEMPLATES = DATA_DIR / "chat_templates"
PRESET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


# --------------------------------------------------------------------------- checks before anything loads


def chat_template_presets() -> list[str]:
    """The named templates shipped in data/chat_templates/ (``model.chat_template=NAME``)."""
    return sorted(p.stem for p in CHAT_TEMPLATES.glob("*.jinja"))


def read_chat_template(value: str) -> str:
    """``model.chat_template``'s Jinja text: a preset's file, or the file it names; checked to compile."""
    preset = CHAT_TEMPLATES / f"{value}.jinja"
    path = preset if PRESET.match(value) and preset.is_file() else Path(value).expanduser()
    if not path.is_file():
        raise ConfigError(f"model.chat_template is '{value}': neither a preset ({', '.join(chat_template_presets())}) "
                          "nor a Jinja file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"model.chat_template: cannot read {path} ({err})") from None
    if not text.strip():
        raise ConfigError(f"model.chat_template: {path} is empty; expected a Jinja chat template")
    from jinja2 import TemplateError
    from transformers.utils.chat_template_utils import _compile_jinja_template

    try:
        _compile_jinja_template(text)
    except TemplateError as err:
        line = f" line {err.lineno}" if getattr(err, "lineno", None) else ""
        raise ConfigError(f"model.chat_template: {path}{line} is not a valid Jinja template ({err})") from None
    return text


def check_model_config(model_cfg, tuning_name: str, save_merged: bool = False) -> None:
    """The model settings that can be checked before anything loads (choices, the template, quantisation)."""
    for key, value, choices in (("model.dtype", model_cfg.dtype, DTYPES), ("model.init", model_cfg.init, INITS)):
        if value not in choices:
            raise ConfigError(f"{key} is {value!r}; expected one of {', '.join(choices)}")
    if model_cfg.chat_template:
        read_chat_template(model_cfg.chat_template)
    quantization = model_cfg.quantization
    if not quantization:
        return
    if quantization not in QUANTIZATIONS:
        raise ConfigError(f"model.quantization is {quantization!r}; expected one of {', '.join(QUANTIZATIONS)} "
                          "(4-bit bitsandbytes types) or null")
    if tuning_name != "lora":
        raise ConfigError(f"model.quantization={quantization} loads frozen 4-bit weights, which tuning={tuning_name} "
                          "would have to train; quantised training needs tuning=lora (QLoRA: adapters over the 4-bit "
                          "base)")
    if model_cfg.init != "pretrained":
        raise ConfigError(f"model.quantization={quantization} quantises pretrained weights as they load; "
                          f"model.init={model_cfg.init} builds new ones (set model.init=pretrained)")
    if save_merged:
        raise ConfigError(f"tuning.save_merged=true with model.quantization={quantization}: merging into 4-bit "
                          "weights rounds the adapter away; save the adapter alone and merge it into the "
                          "full-precision base model with peft")
    try:
        importlib.import_module("bitsandbytes")
    except Exception as err:  # not installed, or no backend for this machine
        raise ConfigError(f"model.quantization={quantization} needs bitsandbytes, which cannot load here "
                          f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'not installed'}); "
                          "pip install 'align-train[qlora]' (bitsandbytes; its CPU backend runs 4-bit training on a "
                          "CPU, slowly), or unset model.quantization") from None


# --------------------------------------------------------------------------- loading


def ensure_pad_token(tokenizer) -> PreTrainedTokenizerBase:
    """Batched training, scoring and generation need a pad token; models often ship without one (EOS serves)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer(model_cfg) -> PreTrainedTokenizerBase:
    """The tokenizer with ``model.chat_template`` in place of its own, and a pad token guaranteed.

    It carries the end-of-sequence ids of the model's generation config (``generation_eos_ids``), which
    the data check compares with the token that ends an assistant turn in the template.
    """
    kwargs = {}
    if model_cfg.chat_template:
        kwargs["chat_template"] = read_chat_template(model_cfg.chat_template)
    tokenizer = AutoTokenizer.from_pretrained(
        model_cfg.tokenizer or model_cfg.name_or_path,
        revision=model_cfg.revision,
        trust_remote_code=model_cfg.trust_remote_code,
        **kwargs,
    )
    if "chat_template" in kwargs:
        tokenizer.chat_template = kwargs["chat_template"]
    tokenizer.generation_eos_ids = generation_eos_ids(model_cfg)
    return ensure_pad_token(tokenizer)


def generation_eos_ids(model_cfg) -> set[int] | None:
    """The token ids generation stops on for this model (its generation config; else its config), None if unknown."""
    from transformers import GenerationConfig

    source = dict(revision=model_cfg.revision, trust_remote_code=model_cfg.trust_remote_code)
    for read in (lambda: GenerationConfig.from_pretrained(model_cfg.name_or_path, revision=model_cfg.revision),
                 lambda: AutoConfig.from_pretrained(model_cfg.name_or_path, **source)):
        try:
            eos = getattr(read(), "eos_token_id", None)
        except Exception:  # no such file (or no network): the check is skipped, not the run
            continue
        if eos is not None:
            return set(eos) if isinstance(eos, (list, tuple)) else {int(eos)}
    return None


def template_stop_problem(tokenizer) -> str | None:
    """Whether every assistant turn of the chat template ends with a token the model stops generating on.

    A template that ends assistant turns with a token outside the generation config's end-of-sequence
    ids trains a model that never stops ("<|eot_id|>" learnt, "<|end_of_text|>" awaited). Returns a
    message naming both, or None when they agree (or the template or the model's ids are unknown).
    """
    stop = getattr(tokenizer, "generation_eos_ids", None)
    if not getattr(tokenizer, "chat_template", None) or not stop:
        return None
    marks = ["Xq7 first answer", "Xq7 second answer"]
    messages = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": marks[0]},
                {"role": "user", "content": "Again"}, {"role": "assistant", "content": marks[1]}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception as err:  # the template itself refuses a plain two-turn chat
        return f"the chat template cannot render a two-turn conversation ({type(err).__name__}: {err})"
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    stops = ", ".join(f"{tokenizer.convert_ids_to_tokens(i)!r} ({i})" for i in sorted(stop))
    for mark in marks:
        end = text.find(mark) + len(mark)
        if end < len(mark):
            return None  # the template rewrites the content; nothing to locate
        after = [i for i, (start, _) in zip(encoded["input_ids"], encoded["offset_mapping"]) if start >= end]
        if not after:
            return (f"the chat template adds nothing after an assistant turn's content, so the model never learns "
                    f"to emit an end-of-sequence token; the model stops on {stops}")
        if after[0] not in stop:
            token = tokenizer.convert_ids_to_tokens(after[0])
            follows = text[end:end + 24]
            return (f"the chat template ends an assistant turn with {token!r} ({after[0]}; the text after it reads "
                    f"{follows!r}), but the model's generation config stops only on {stops}: a model trained on "
                    f"it never stops generating. Choose a template whose assistant turns end with one of those "
                    f"(model.chat_template), or add {after[0]} to eos_token_id in the trained model's "
                    f"generation_config.json")
    return None


def load_model(model_cfg) -> PreTrainedModel:
    """The causal LM named by the config, pretrained weights or freshly initialised from its config."""
    if model_cfg.init not in INITS:
        raise ConfigError(f"model.init is '{model_cfg.init}'; expected one of {', '.join(INITS)}")
    kwargs = {"dtype": DTYPES[model_cfg.dtype], "trust_remote_code": model_cfg.trust_remote_code}
    if model_cfg.attn_implementation:
        kwargs["attn_implementation"] = model_cfg.attn_implementation
    if model_cfg.quantization:
        kwargs.update(quantized_loading(model_cfg))
    if model_cfg.init == "random":
        config = AutoConfig.from_pretrained(
            model_cfg.name_or_path, revision=model_cfg.revision, trust_remote_code=model_cfg.trust_remote_code
        )
        return AutoModelForCausalLM.from_config(config, **kwargs)
    return AutoModelForCausalLM.from_pretrained(
        model_cfg.name_or_path, revision=model_cfg.revision, use_safetensors=True, **kwargs
    )


def quantized_loading(model_cfg) -> dict:
    """from_pretrained arguments for a 4-bit base (QLoRA): bitsandbytes' config and this process's device."""
    from transformers import BitsAndBytesConfig

    compute = DTYPES[model_cfg.dtype]
    if compute == "auto":
        compute = torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    device = int(os.environ.get("LOCAL_RANK", "0")) if torch.cuda.is_available() else "cpu"
    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=model_cfg.quantization,
                                bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute)
    return {"quantization_config": config, "device_map": {"": device}}


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
