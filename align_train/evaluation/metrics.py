"""Likelihood metrics on held-out rows: preference accuracy and completion perplexity.

The log-probabilities come from the model-reading layer's scorer (``inference.logprobs``).
"""

from __future__ import annotations

import math

from align_train.inference.logprobs import completion_logprobs


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
