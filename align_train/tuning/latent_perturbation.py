"""Latent adversarial patch training (LAPT, "Probing the Robustness of Large Language Models Safety to Latent
Perturbations", Gu et al., 2025): train with the attack's perturbation in the hidden states.

``train.latent_perturbation.layers`` names the blocks (1-based); during training, every forward that
computes gradients adds fresh Gaussian noise, normalised per token to the hidden state's own mean
and standard deviation and multiplied by ``scale``, to each chosen block's output at every real
token. It is a pair of forward hooks on the model, so it applies unchanged to every objective and
every tuning strategy (a LoRA or NeST model keeps the same blocks). Passes without gradients are
left alone: a reference model's or adapter-disabled log-probabilities, held-out loss, the evaluation
hook's generations. The noise comes from its own generator seeded by ``seed`` (the run's other random
streams do not move), one draw per forward, so a block recomputed under gradient checkpointing
sees the noise its first pass saw. With ``layers`` empty nothing is attached: the run is bit-for-bit
the run without the option.
"""

from __future__ import annotations

from align_train.errors import ConfigError
from align_train.inference.perturbation import LatentPerturbation

KEY = "train.latent_perturbation.layers"


def check_latent_perturbation(cfg) -> None:
    """Checks that need no model (``cfg`` is train.latent_perturbation)."""
    bad = [layer for layer in cfg.layers if layer < 1]
    if bad:
        raise ConfigError(f"{KEY}={list(cfg.layers)}: block indices start at 1, got {bad}")
    if len(set(cfg.layers)) != len(cfg.layers):
        raise ConfigError(f"{KEY}={list(cfg.layers)}: a block is named twice")


def latent_perturbation(cfg, model) -> LatentPerturbation | None:
    """The training perturbation for ``model`` (attach it with ``with``), or None when off; a layer beyond
    the model's blocks is a ConfigError naming the key."""
    if not cfg.layers:
        return None
    check_latent_perturbation(cfg)
    try:
        return LatentPerturbation(model, list(cfg.layers), scale=cfg.scale, seed=cfg.seed, fresh=True, key=KEY)
    except ValueError as err:
        raise ConfigError(str(err)) from None
