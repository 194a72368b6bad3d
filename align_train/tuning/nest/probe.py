"""Probe: what each MLP neuron does on harmful vs harmless prompts, read from the frozen model.

A neuron's activation is the input of the down projection (``act(gate) * up`` in Llama-style
blocks): the quantity the down projection's column for that neuron multiplies. It is
max-pooled over the prompt's real tokens (padding masked out), so a neuron that fires on
one telling word counts as much as one that fires throughout.
"""

from __future__ import annotations

import torch
from torch import nn

from align_train.errors import ConfigError
from align_train.inference import pooled_module_inputs


def mlp_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every MLP block with a linear ``down_proj``, in layer order."""
    blocks = [(name, module) for name, module in model.named_modules()
              if isinstance(getattr(module, "down_proj", None), nn.Linear)]
    if not blocks:
        raise ConfigError(
            f"tuning=nest: {type(model).__name__} has no MLP block with a linear down_proj (the neurons NeST "
            "selects are the down projection's inputs); use tuning=lora or tuning=full for this model"
        )
    return blocks


def pooled_activations(model: nn.Module, tokenizer, prompts: list[str], batch_size: int,
                       max_length: int) -> list[torch.Tensor]:
    """Per MLP block, a (prompts x neurons) float32 tensor of max-pooled down_proj inputs."""
    modules = [block.down_proj for _, block in mlp_blocks(model)]
    return pooled_module_inputs(model, tokenizer, prompts, modules, pooling="max", batch_size=batch_size,
                                max_length=max_length)
