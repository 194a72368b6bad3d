"""Batched generation: greedy by default, left-padded batches, the KV cache on.

Greedy decoding by default so that the same checkpoint always gets the same score; batches are
padded on the left so that every row continues from its own last token.
"""

from __future__ import annotations

import torch

from align_train.inference.prompts import pad, pad_id, prompt_ids


@torch.no_grad()
def generate(model, tokenizer, prompts: list, cfg, chat: bool = True) -> list[str]:
    """Completions for the prompts, in order; ``cfg`` is a GenerationConfig (tokens, batch size, sampling).

    ``chat=False`` feeds the prompts as raw text even to a model with a chat template.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sampling = ({"do_sample": True, "temperature": cfg.temperature, "top_p": cfg.top_p} if cfg.do_sample
                else {"do_sample": False})
    outputs: list[str] = []
    try:
        for start in range(0, len(prompts), cfg.batch_size):
            seqs = [prompt_ids(tokenizer, p, cfg.system_prompt, chat=chat) for p in prompts[start:start + cfg.batch_size]]
            ids, mask = pad(seqs, pad_id(tokenizer), side="left")
            generated = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                       max_new_tokens=cfg.max_new_tokens, pad_token_id=pad_id(tokenizer), **sampling)
            outputs += tokenizer.batch_decode(generated[:, ids.shape[1]:], skip_special_tokens=True)
    finally:
        model.train(was_training)
    return [o.strip() for o in outputs]
