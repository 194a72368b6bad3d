"""Log-probabilities of completions given their prompts: the one scorer of held-out rows.

Prompt and completion are tokenised the way TRL tokenises training rows: a conversational
prompt through the chat template with the generation prompt, and the completion as the rest of
the full conversation's tokens; a plain-text prompt and completion as text, the completion ended
by EOS. Only completion tokens are scored.
"""

from __future__ import annotations

import torch

from align_train.inference.sharding import map_batches, parameters_sharded


def encode_completion(tokenizer, prompt, completion) -> tuple[list[int], list[int]]:
    """Token ids of the prompt and of the completion that follows it."""
    if isinstance(completion, list):
        prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
        full_ids = tokenizer.apply_chat_template(list(prompt) + list(completion), tokenize=True)
        prompt_ids, full_ids = _ids(prompt_ids), _ids(full_ids)
        if full_ids[: len(prompt_ids)] != prompt_ids:
            raise ValueError("the chat template renders the prompt differently inside the full conversation")
        return prompt_ids, full_ids[len(prompt_ids):]
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        completion_ids = completion_ids + [tokenizer.eos_token_id]
    if not prompt_ids and tokenizer.bos_token_id is not None:
        prompt_ids = [tokenizer.bos_token_id]
    return prompt_ids, completion_ids


def _ids(encoded) -> list[int]:
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


@torch.no_grad()
def completion_logprobs(model, tokenizer, pairs, batch_size: int = 8, max_length: int = 1024):
    """Summed log-probability and token count of each completion given its prompt.

    Batches group rows of similar length and are shared out across processes (``sharding``).
    """
    model_was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def score(batch: list[tuple[list[int], list[int]]]) -> list[tuple[float, int]]:
        seqs = [(p + c)[:max_length] for p, c in batch]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        scored = torch.zeros_like(ids, dtype=torch.bool)
        for i, ((p, _), seq) in enumerate(zip(batch, seqs)):
            ids[i, : len(seq)] = torch.tensor(seq)
            mask[i, : len(seq)] = 1
            scored[i, max(len(p), 1): len(seq)] = True  # the first token has no prediction
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        token_logp = logp.gather(-1, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1)
        token_logp = token_logp * scored[:, 1:].to(device)
        return [(token_logp[i].sum().item(), int(scored[i].sum())) for i in range(len(seqs))]

    try:
        encoded = [encode_completion(tokenizer, p, c) for p, c in pairs]
        return map_batches(score, encoded, batch_size, length=lambda pc: min(len(pc[0]) + len(pc[1]), max_length),
                           lockstep=parameters_sharded(model))
    finally:
        model.train(model_was_training)


@torch.no_grad()
def continuation_nll(model, prompt_seqs: list[list[int]], continuation_seqs: list[list[int]], pad_token: int,
                     batch_size: int = 8, around_forward=None) -> list[float | None]:
    """Mean negative log-likelihood per token of each continuation after its prompt (exact token ids given).

    Batches are right-padded with real-token position ids, and shared out across processes
    (``sharding``). ``around_forward(prompt_mask)``, when given, returns a context manager entered
    around each batch's forward with the (batch, tokens) mask of that batch's prompt positions (a
    latent perturbation at the prompt, for instance). An empty continuation scores None.
    """
    from contextlib import nullcontext

    from align_train.inference.prompts import pad, position_ids

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device

    def score(batch: list[tuple[list[int], list[int]]]) -> list[float | None]:
        ids, mask = pad([p + c for p, c in batch], pad_token, side="right")
        prompt_mask = torch.zeros_like(mask, dtype=torch.bool)
        scored = torch.zeros_like(mask, dtype=torch.bool)
        for i, (p, c) in enumerate(batch):
            prompt_mask[i, : len(p)] = True
            scored[i, len(p): len(p) + len(c)] = True
        ids, mask = ids.to(device), mask.to(device)
        with (around_forward(prompt_mask) if around_forward else nullcontext()):
            logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask),
                           use_cache=False).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        target = scored[:, 1:].to(device)
        results: list[float | None] = []
        for i in range(len(batch)):
            n = int(target[i].sum())
            results.append(-(logp[i] * target[i]).sum().item() / n if n else None)
        return results

    try:
        return map_batches(score, list(zip(prompt_seqs, continuation_seqs)), batch_size,
                           lockstep=parameters_sharded(model))
    finally:
        model.train(was_training)
