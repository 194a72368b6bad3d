"""Evaluation of models and checkpoints: likelihood metrics today, the checkpoint hook builds on them."""

from align_train.evaluation.metrics import (
    perplexity,
    preference_accuracy,
    preference_metrics,
    preference_scores,
    prompt_completion_pairs,
)

__all__ = ["perplexity", "preference_accuracy", "preference_metrics", "preference_scores", "prompt_completion_pairs"]
