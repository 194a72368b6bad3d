"""Underlying-distribution matching for BCO: importance weights for undesirable examples.

Thumbs-up and thumbs-down answers often come from different prompt distributions (people
down-vote answers to hard or adversarial prompts more often). BCO's classifier would then
learn to tell the prompts apart instead of good answers from bad. UDM weights each
undesirable example by the density ratio p_desirable(x) / p_undesirable(x) of its prompt,
so the undesirable set counts as if drawn from the desirable prompts' distribution.

The ratio comes from a probabilistic classifier: with balanced classes,
p_D(x) / p_U(x) = P(desirable | x) / P(undesirable | x). A logistic regression on
standardised prompt embeddings, with ``class_weight="balanced"`` standing in for equal
priors, is fitted on a seeded sample of training prompts; its balanced accuracy on a
held-out part of that sample says whether the distributions differ at all (about 50%: they
do not). The regularisation is strong by default (C = 0.01): the ratio wanted is that of
kinds of prompts, not of individual prompts, and the same prompt often appears with both
labels, where a classifier that memorises prompts is worse than chance.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from align_train.errors import ConfigError, DataError
from align_train.inference import load_side_model, pooled_hidden_states

# Below this held-out balanced accuracy the classifier cannot tell the prompt sets apart.
INDISTINGUISHABLE_ACCURACY = 0.55


@dataclass
class DensityRatio:
    """A fitted p_desirable(x) / p_undesirable(x) estimator and how well its classifier did."""

    classifier: object
    heldout_accuracy: float
    fitted_on: dict  # prompts of each kind in the fit / held-out sample

    def __call__(self, embeddings: np.ndarray) -> np.ndarray:
        p = self.classifier.predict_proba(np.asarray(embeddings, dtype=np.float64))[:, 1]
        p = np.clip(p, 1e-6, 1 - 1e-6)
        return p / (1.0 - p)


def fit_density_ratio(desirable: np.ndarray, undesirable: np.ndarray, heldout_fraction: float = 0.2,
                      regularization: float = 0.01, seed: int = 0, min_prompts: int = 8) -> DensityRatio:
    """Fit the classifier desirable (1) vs undesirable (0) on prompt embeddings."""
    # sklearn loads in about a second: only the runs that fit a classifier pay for it
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    check_enough_prompts("desirable", len(desirable), min_prompts)
    check_enough_prompts("undesirable", len(undesirable), min_prompts)
    X = np.concatenate([desirable, undesirable]).astype(np.float64)
    y = np.concatenate([np.ones(len(desirable)), np.zeros(len(undesirable))])
    fit_X, test_X, fit_y, test_y = train_test_split(X, y, test_size=heldout_fraction, random_state=seed, stratify=y)
    classifier = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=regularization, class_weight="balanced", max_iter=2000, random_state=seed),
    )
    classifier.fit(fit_X, fit_y)
    accuracy = float(balanced_accuracy_score(test_y, classifier.predict(test_X)))
    classifier.fit(X, y)  # the weights use every sampled prompt; the held-out score only informs
    return DensityRatio(
        classifier=classifier,
        heldout_accuracy=accuracy,
        fitted_on={"desirable": int(len(desirable)), "undesirable": int(len(undesirable)),
                   "heldout": int(len(test_y))},
    )


def check_enough_prompts(kind: str, count: int, min_prompts: int) -> None:
    if count < min_prompts:
        raise DataError(
            f"objective.udm: the training data has {count} distinct {kind} prompt(s); fitting the density-ratio "
            f"classifier needs at least objective.udm.min_prompts={min_prompts} of each kind (or set "
            f"objective.udm.enabled=false)"
        )


def clipped_weights(ratios: np.ndarray, min_ratio: float, max_ratio: float) -> tuple[np.ndarray, dict]:
    """The ratios clipped to [min_ratio, max_ratio], with statistics for the log."""
    weights = np.clip(ratios, min_ratio, max_ratio)
    stats = {
        "mean": float(weights.mean()),
        "min": float(weights.min()),
        "max": float(weights.max()),
        "std": float(weights.std()),
        "clipped_low": float((ratios < min_ratio).mean()),
        "clipped_high": float((ratios > max_ratio).mean()),
    }
    return weights, stats


def prompt_key(prompt) -> str:
    """A prompt (plain text or chat messages) as a key: the same prompt, the same key."""
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, ensure_ascii=False)


def embed_prompts(model, tokenizer, prompts: list, batch_size: int, use_chat_template: bool) -> np.ndarray:
    """Mean-pooled last-layer hidden states, one row per prompt, read as every other reader reads a prompt."""
    n_layers = model.config.num_hidden_layers
    states = pooled_hidden_states(model, tokenizer, prompts, layers=[n_layers], pooling="mean",
                                  batch_size=batch_size, use_chat_template=use_chat_template)
    return states[n_layers]


def load_embedding_model(name_or_path: str):
    """A sentence-embedding (or any transformers) encoder from a local directory or hub id (safetensors only)."""
    try:
        return load_side_model(name_or_path, "encoder", key="objective.udm.embedding_model")
    except ConfigError as err:
        raise DataError(str(err)) from None
