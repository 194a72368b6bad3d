"""Branching factor: the effective number of plausible next tokens along the model's own generations.

From "How Alignment Shrinks the Generative Horizon" (Yang & Holtzman, 2025): the exponential of the
mean per-token entropy (nats) of the model's next-token distribution, taken along the answers it
generates itself to a fixed prompt set. Every generated token up to and including the end of the
answer counts once, pooled over the prompts. A model that always knows its next token scores 1;
alignment typically lowers it.
"""

from __future__ import annotations

import math

from align_train.inference.generation import generate_with_entropies


def branching_factor_of(entropies: list[list[float]]) -> float:
    """exp of the mean entropy over every generated token of every answer (nan when nothing was generated)."""
    values = [h for answer in entropies for h in answer]
    return math.exp(sum(values) / len(values)) if values else math.nan


def branching_factor(model, tokenizer, prompts: list, generation) -> dict:
    """The branching factor, the mean entropy and the token count, with the generations read."""
    responses, entropies = generate_with_entropies(model, tokenizer, prompts, generation)
    tokens = sum(len(e) for e in entropies)
    value = branching_factor_of(entropies)
    return {"branching_factor": value, "mean_entropy": math.log(value) if tokens else math.nan, "tokens": tokens,
            "responses": responses}
