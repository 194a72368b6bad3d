"""Side models: the models a run reads beside the one it trains (judges, prompt encoders, document writers).

Loaded from a local directory or a hub id, from safetensors only (a pickled checkpoint is never
unpickled), without remote code unless asked, in eval mode, with a pad token guaranteed.
"""

from __future__ import annotations

import torch

from align_train.errors import ConfigError
from align_train.models import ensure_pad_token

KINDS = ("causal-lm", "classifier", "encoder")


def default_device(device=None) -> torch.device:
    return torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_side_model(name_or_path: str, kind: str, key: str, trust_remote_code: bool = False, device=None,
                    padding_side: str | None = None):
    """(model, tokenizer) of a side model; ``key`` is the config key that named it, for the error message."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    classes = {"causal-lm": AutoModelForCausalLM, "classifier": AutoModelForSequenceClassification,
               "encoder": AutoModel}
    if kind not in classes:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    try:
        extra = {"padding_side": padding_side} if padding_side else {}
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, **extra)
        model = classes[kind].from_pretrained(name_or_path, use_safetensors=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise ConfigError(f"{key}: cannot load '{name_or_path}' as a {kind} model (safetensors weights only): "
                          f"{str(err).splitlines()[0]}") from None
    ensure_pad_token(tokenizer)
    if getattr(model.config, "pad_token_id", None) is None:  # classifiers find each row's last token with it
        model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(default_device(device)).eval(), tokenizer
