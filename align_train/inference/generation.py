"""Batched generation: greedy by default, left-padded batches of similar length, the KV cache on.

Greedy decoding by default so that the same checkpoint always gets the same score; batches are
padded on the left so that every row continues from its own last token. In a multi-process run
each process generates its share of the batches and every process gets all completions
(``sharding.map_batches``): nobody waits idle, and the result does not depend on the process count.
"""

from __future__ import annotations

import torch

from align_train.inference.prompts import pad, pad_id, prompt_ids
from align_train.inference.sharding import map_batches, parameters_sharded


@torch.no_grad()
def generate(model, tokenizer, prompts: list, cfg, chat: bool = True) -> list[str]:
    """Completions for the prompts, in order; ``cfg`` is a GenerationConfig (tokens, batch size, sampling).

    ``chat=False`` feeds the prompts as raw text even to a model with a chat template.
    """
    if getattr(cfg, "backend", "transformers") == "vllm":
        from align_train.inference.vllm_backend import generate_with_vllm

        if hasattr(model, "peft_config"):  # vLLM would load the base alone from name_or_path
            raise RuntimeError("generation.backend=vllm loads saved weights, and this model is an adapter on its base: "
                               "save it merged (tuning.save_merged=true) or use the transformers backend")
        return generate_with_vllm(model.name_or_path, tokenizer, prompts, cfg, chat=chat)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sampling = ({"do_sample": True, "temperature": cfg.temperature, "top_p": cfg.top_p} if cfg.do_sample
                else {"do_sample": False})

    lockstep = parameters_sharded(model)

    def complete(seqs: list[list[int]]) -> list[str]:
        ids, mask = pad(seqs, pad_id(tokenizer), side="left")
        # synced_gpus: a process whose rows have all ended keeps taking part in the collective forwards
        generated = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), synced_gpus=lockstep,
                                   max_new_tokens=cfg.max_new_tokens, pad_token_id=pad_id(tokenizer), **sampling)
        return [text.strip() for text in tokenizer.batch_decode(generated[:, ids.shape[1]:], skip_special_tokens=True)]

    try:
        seqs = [prompt_ids(tokenizer, p, cfg.system_prompt, chat=chat) for p in prompts]
        return map_batches(complete, seqs, cfg.batch_size, length=len, lockstep=lockstep)
    finally:
        model.train(was_training)
