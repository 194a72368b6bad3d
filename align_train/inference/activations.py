"""Pooled activations: a model's hidden states, or the inputs of chosen modules, pooled over each prompt.

One runner serves every reader: the latent-separation suite and BCO's distribution matching pool
the blocks' hidden states; NeST's probe pools the inputs of the MLP down projections. Prompts are
rendered by ``prompts.prompt_ids``, batched with the attention mask set and position ids counted
over real tokens only, so a prompt's states do not depend on what it is batched with.
"""

from __future__ import annotations

import inspect
from typing import Callable

import numpy as np
import torch

from align_train.inference.prompts import pad, pad_id, position_ids, prompt_ids

POOLINGS = ("mean", "last", "max")
HIDDEN_POOLINGS = ("mean", "last")  # a hidden state is read by its mean or its last token; max is for neurons


def _pool(x: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(batch, tokens, width) -> (batch, width) over the real tokens; padded positions never count."""
    x = x.float()
    real = mask.bool().unsqueeze(-1)
    if pooling == "mean":
        # where(), not a product: padded positions may hold NaN/inf that 0 * x would keep
        summed = torch.where(real, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(1)
        return summed / mask.sum(-1, keepdim=True).to(x.dtype)
    if pooling == "max":
        return x.masked_fill(~real, float("-inf")).amax(dim=1)
    last = mask.shape[1] - 1 - mask.flip(-1).argmax(-1)  # the last real token, whichever side the padding is
    return x[torch.arange(x.shape[0], device=x.device), last]


@torch.no_grad()
def run_batches(model, tokenizer, prompts: list[str], batch_size: int, read: Callable, chat: bool = True,
                max_length: int | None = None, **forward) -> None:
    """Forward every prompt in batches; ``read(outputs, mask)`` collects what it needs from each batch."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("no prompts")
    seqs = [prompt_ids(tokenizer, p, chat=chat, max_length=max_length) for p in prompts]
    side = getattr(tokenizer, "padding_side", "right")
    device = next(model.parameters()).device
    takes_positions = "position_ids" in inspect.signature(model.forward).parameters
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(seqs), batch_size):
            ids, mask = pad(seqs[start:start + batch_size], pad_id(tokenizer), side)
            ids, mask = ids.to(device), mask.to(device)
            kwargs = {"input_ids": ids, "attention_mask": mask, "use_cache": False, **forward}
            if takes_positions:
                kwargs["position_ids"] = position_ids(mask)
            read(model(**kwargs), mask)
    finally:
        model.train(was_training)


def pooled_hidden_states(model, tokenizer, prompts: list[str], layers: list[int] | None = None,
                         pooling: str = "mean", batch_size: int = 16, use_chat_template: bool = True,
                         max_length: int | None = None) -> dict[int, np.ndarray]:
    """{layer: (prompts, hidden) float32 array}; layer i (1-based) is the output of block i, None: all blocks."""
    if pooling not in HIDDEN_POOLINGS:
        raise ValueError(f"pooling must be one of {HIDDEN_POOLINGS}, got {pooling!r}")
    pooled: dict[int, list[np.ndarray]] = {}
    chosen = list(layers) if layers is not None else None

    def read(outputs, mask):
        nonlocal chosen
        hidden = outputs.hidden_states
        n_layers = len(hidden) - 1
        if chosen is None:
            chosen = list(range(1, n_layers + 1))
        bad = [layer for layer in chosen if not isinstance(layer, (int, np.integer)) or not 1 <= layer <= n_layers]
        if bad:
            raise ValueError(f"layers must be block indices in 1..{n_layers}, got {bad}")
        for layer in chosen:
            pooled.setdefault(int(layer), []).append(_pool(hidden[layer], mask, pooling).cpu().numpy())

    run_batches(model, tokenizer, prompts, batch_size, read, chat=use_chat_template, max_length=max_length,
                output_hidden_states=True)
    return {layer: np.concatenate(parts, axis=0).astype(np.float32) for layer, parts in pooled.items()}


def pooled_module_inputs(model, tokenizer, prompts: list[str], modules: list[torch.nn.Module],
                         pooling: str = "max", batch_size: int = 16,
                         max_length: int | None = None) -> list[torch.Tensor]:
    """Per module, a (prompts, input width) float32 tensor of its first input pooled over each prompt."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    pooled: list[list[torch.Tensor]] = [[] for _ in modules]
    captured: dict[int, torch.Tensor] = {}

    def recorder(i):
        def hook(module, args):
            captured[i] = args[0]
        return hook

    def read(outputs, mask):
        for i in range(len(modules)):
            pooled[i].append(_pool(captured.pop(i), mask, pooling).cpu())

    handles = [module.register_forward_pre_hook(recorder(i)) for i, module in enumerate(modules)]
    try:
        run_batches(model, tokenizer, prompts, batch_size, read, max_length=max_length)
    finally:
        for handle in handles:
            handle.remove()
    return [torch.cat(chunks) for chunks in pooled]
