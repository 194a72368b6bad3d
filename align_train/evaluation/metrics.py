"""Likelihood metrics on held-out rows: preference accuracy and completion perplexity.

Prompt and completion are tokenised the way TRL does: a conversational prompt through the
chat template with the generation prompt, and the completion as the rest of the full
conversation's tokens; only completion tokens are scored.
"""

from __future__ import annotations

import math

import torch


def encode(tokenizer, prompt, completion) -> tuple[list[int], list[int]]:
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
    """Summed log-probability and token count of each completion given its prompt."""
    model_was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    results = []
    for start in range(0, len(pairs), batch_size):
        batch = [encode(tokenizer, p, c) for p, c in pairs[start:start + batch_size]]
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
        for i in range(len(seqs)):
            results.append((token_logp[i].sum().item(), int(scored[i].sum())))
    model.train(model_was_training)
    return results


def preference_scores(model, tokenizer, rows: list[dict], **kwargs) -> list[tuple[float, float]]:
    """(log p(chosen | prompt), log p(rejected | prompt)) for each pair."""
    pairs = [(r["prompt"], r["chosen"]) for r in rows] + [(r["prompt"], r["rejected"]) for r in rows]
    scores = [s for s, _ in completion_logprobs(model, tokenizer, pairs, **kwargs)]
    return list(zip(scores[: len(rows)], scores[len(rows):]))


def preference_metrics(scores, reference_scores=None) -> dict[str, float]:
    """Log-prob accuracy and margin; with a reference's scores, also DPO's implicit-reward accuracy and margin.

    The implicit reward of a completion is log p_policy - log p_reference (beta omitted: it scales
    the margin, not the accuracy). Summed log-prob accuracy favours shorter completions; the reward
    accuracy cancels that bias because the reference has it too.
    """
    margins = [c - r for c, r in scores]
    metrics = {
        "preference_accuracy": sum(m > 0 for m in margins) / len(margins),
        "logprob_margin": sum(margins) / len(margins),
    }
    if reference_scores is not None:
        rewards = [(c - rc) - (r - rr) for (c, r), (rc, rr) in zip(scores, reference_scores)]
        metrics["reward_accuracy"] = sum(m > 0 for m in rewards) / len(rewards)
        metrics["reward_margin"] = sum(rewards) / len(rewards)
    return metrics


def preference_accuracy(model, tokenizer, rows: list[dict], reference_scores=None, **kwargs) -> dict[str, float]:
    """Preference metrics of a model on held-out pairs (see ``preference_metrics``)."""
    return preference_metrics(preference_scores(model, tokenizer, rows, **kwargs), reference_scores)


def prompt_completion_pairs(fmt: str, rows: list[dict]) -> list[tuple]:
    """The (prompt, completion) whose likelihood measures retained ability, per data format."""
    if fmt == "preference":
        return [(r["prompt"], r["chosen"]) for r in rows]
    if fmt == "feedback":
        return [(r["prompt"], r["completion"]) for r in rows if r["label"]]
    if fmt == "messages":
        pairs = []
        for r in rows:
            last = max(i for i, t in enumerate(r["messages"]) if t["role"] == "assistant")
            pairs.append((r["messages"][:last], [r["messages"][last]]))
        return pairs
    if fmt == "documents":
        return [("", r["text"]) for r in rows]
    raise ValueError(f"unknown format {fmt}")


def perplexity(model, tokenizer, pairs: list[tuple], **kwargs) -> float:
    """exp of the mean negative log-likelihood per completion token."""
    scores = completion_logprobs(model, tokenizer, pairs, **kwargs)
    total_logp = sum(s for s, _ in scores)
    tokens = sum(n for _, n in scores)
    return math.exp(-total_logp / max(tokens, 1))
