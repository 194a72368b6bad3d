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
from align_train.evaluation.generation import render


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


@torch.no_grad()
def pooled_activations(model: nn.Module, tokenizer, prompts: list[str], batch_size: int,
                       max_length: int) -> list[torch.Tensor]:
    """Per MLP block, a (prompts x neurons) float32 tensor of max-pooled down_proj inputs."""
    blocks = mlp_blocks(model)
    pooled: list[list[torch.Tensor]] = [[] for _ in blocks]
    mask: torch.Tensor | None = None

    def recorder(i):
        def hook(module, args):
            x = args[0].float().masked_fill(~mask[..., None], float("-inf"))
            pooled[i].append(x.amax(dim=1).cpu())
        return hook

    handles = [block.down_proj.register_forward_pre_hook(recorder(i)) for i, (_, block) in enumerate(blocks)]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for start in range(0, len(prompts), batch_size):
            texts = [render(tokenizer, p) for p in prompts[start:start + batch_size]]
            batch = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=max_length,
                              add_special_tokens=not tokenizer.chat_template)
            batch = {k: v.to(device) for k, v in batch.items()}
            mask = batch["attention_mask"].bool()
            model(**batch)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return [torch.cat(chunks) for chunks in pooled]
