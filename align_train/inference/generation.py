"""Batched generation: greedy by default, left-padded batches of similar length, the KV cache on.

Greedy decoding by default so that the same checkpoint always gets the same score; batches are
padded on the left so that every row continues from its own last token. In a multi-process run
each process generates its share of the batches and every process gets all completions
(``sharding.map_batches``): nobody waits idle, and the result does not depend on the process count.
``generate_with_entropies`` also returns the entropy of the model's next-token distribution at
each generated token.
"""

from __future__ import annotations

import torch

from align_train.inference.prompts import pad, pad_id, prompt_ids
from align_train.inference.sharding import map_batches, parameters_sharded


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
    return _generate(model, tokenizer, prompts, cfg, chat, entropies=False)[0]


def generate_with_entropies(model, tokenizer, prompts: list, cfg, chat: bool = True
                            ) -> tuple[list[str], list[list[float]]]:
    """Completions, and per completion the entropy (nats) of the next-token distribution at each generated
    token up to and including the end-of-sequence token (the raw logits, before any sampling settings)."""
    return _generate(model, tokenizer, prompts, cfg, chat, entropies=True)


def token_entropies(logits: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of softmax(logits) over the last dimension."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def _stop_ids(model, tokenizer) -> set[int]:
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = set(ids if isinstance(ids, (list, tuple)) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


@torch.no_grad()
def _generate(model, tokenizer, prompts: list, cfg, chat: bool, entropies: bool):
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sampling = ({"do_sample": True, "temperature": cfg.temperature, "top_p": cfg.top_p} if cfg.do_sample
                else {"do_sample": False})
    stops = _stop_ids(model, tokenizer)
    extra = {"output_logits": True, "return_dict_in_generate": True} if entropies else {}
    lockstep = parameters_sharded(model)

    def complete(seqs: list[list[int]]) -> list[tuple[str, list[float]]]:
        ids, mask = pad(seqs, pad_id(tokenizer), side="left")
        # synced_gpus: a process whose rows have all ended keeps taking part in the collective forwards
        generated = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), synced_gpus=lockstep,
                                   max_new_tokens=cfg.max_new_tokens, pad_token_id=pad_id(tokenizer), **sampling,
                                   **extra)
        sequences = generated.sequences if entropies else generated
        new = sequences[:, ids.shape[1]:]
        texts = [text.strip() for text in tokenizer.batch_decode(new, skip_special_tokens=True)]
        per_token: list[list[float]] = [[] for _ in texts]
        if entropies:
            step_entropy = torch.stack([token_entropies(step) for step in generated.logits], dim=1).cpu()
            for i, (row, tokens) in enumerate(zip(step_entropy, new.tolist())):
                end = next((t + 1 for t, token in enumerate(tokens) if token in stops), len(tokens))
                per_token[i] = row[:end].tolist()
        return list(zip(texts, per_token))

    try:
        seqs = [prompt_ids(tokenizer, p, cfg.system_prompt, chat=chat) for p in prompts]
        results = map_batches(complete, seqs, cfg.batch_size, length=len, lockstep=lockstep)
    finally:
        model.train(was_training)
    return [text for text, _ in results], [entropy for _, entropy in results]
