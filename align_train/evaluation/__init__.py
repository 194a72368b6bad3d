"""Evaluation of models and checkpoints: the suites, the hook that runs them during training, align-eval.

Modules: metrics (likelihood), generation (prompt sets, batched generation), judges (refusal or
not), separation (latent separation index), suites, evaluator (runs suites, writes step-N.json),
hook (the TrainerCallback), cli (align-eval).
"""

from align_train.evaluation.metrics import (
    perplexity,
    preference_accuracy,
    preference_metrics,
    preference_scores,
    prompt_completion_pairs,
)

__all__ = ["perplexity", "preference_accuracy", "preference_metrics", "preference_scores", "prompt_completion_pairs"]
