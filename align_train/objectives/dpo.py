"""Direct preference optimisation and every loss variant TRL's DPOTrainer offers."""

from __future__ import annotations

import dataclasses
import re

from trl import DPOConfig, DPOTrainer

from align_train.errors import ConfigError
from align_train.objectives.base import ReferenceObjective, check_choice

F_DIVERGENCES = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")
# Loss types built on the chosen-minus-rejected score difference: the only ones with an f-divergence form.
F_DIVERGENCE_LOSSES = {"sigmoid", "sigmoid_norm", "hinge", "ipo", "exo_pair", "robust", "discopop", "sft"}


def trl_dpo_loss_types() -> tuple[str, ...]:
    """The loss types of the installed TRL, read from DPOConfig's own field documentation.

    TRL validates ``loss_type`` only at the first training step; reading its list here lets
    a typo fail before anything loads, and stays in step with TRL upgrades.
    """
    field = next(f for f in dataclasses.fields(DPOConfig) if f.name == "loss_type")
    names = tuple(dict.fromkeys(re.findall(r"`'([a-z_]+)'`", field.metadata["help"])))
    if not names:  # pragma: no cover - only if TRL changes its help text format
        raise RuntimeError("cannot read DPO loss types from trl.DPOConfig")
    return names


class DPOObjective(ReferenceObjective):
    name = "dpo"
    accepts = ("preference",)
    config_class = DPOConfig
    trainer_class = DPOTrainer

    @property
    def logprob_outputs(self) -> tuple[str, ...]:  # what DPOTrainer asks its head for (metrics, WPO weights)
        weighting = ("log_sum_sq_probs",) if self.cfg.use_weighting else ()
        return ("log_probs", "entropy", "mean_logits", "is_top1", *weighting)

    def validate(self, run_cfg) -> None:
        super().validate(run_cfg)
        cfg = self.cfg
        if not cfg.loss_type:
            raise ConfigError("objective.loss_type: name at least one loss type")
        valid = trl_dpo_loss_types()
        for i, loss in enumerate(cfg.loss_type):
            if loss not in valid:
                raise ConfigError(f"objective.loss_type[{i}] is '{loss}'; TRL's DPO offers: {', '.join(valid)}")
        if cfg.loss_weights is not None and len(cfg.loss_weights) != len(cfg.loss_type):
            raise ConfigError(
                f"objective.loss_weights has {len(cfg.loss_weights)} weight(s) for {len(cfg.loss_type)} "
                f"loss type(s) {list(cfg.loss_type)}; give one weight per loss type"
            )
        check_choice("objective.f_divergence_type", cfg.f_divergence_type, F_DIVERGENCES)
        if "robust" in cfg.loss_type and not 0.0 <= cfg.label_smoothing < 0.5:
            raise ConfigError(f"objective.label_smoothing must be in [0, 0.5) for robust DPO, got {cfg.label_smoothing}")
        if "exo_pair" in cfg.loss_type and cfg.label_smoothing <= 0.0:
            raise ConfigError("objective.label_smoothing must be > 0 for exo_pair (the EXO paper recommends 1e-3)")
        other = sorted(set(cfg.loss_type) - F_DIVERGENCE_LOSSES)
        if cfg.f_divergence_type != "reverse_kl" and other:
            raise ConfigError(
                f"objective.f_divergence_type={cfg.f_divergence_type} has no form for loss type(s) {other}; "
                f"use it with {sorted(F_DIVERGENCE_LOSSES)}"
            )
        if cfg.use_weighting and {"aot", "aot_unpaired"} & set(cfg.loss_type):
            raise ConfigError("objective.use_weighting is not supported with the aot / aot_unpaired loss types")
        if cfg.ld_alpha is not None and not 0.0 <= cfg.ld_alpha <= 1.0:
            raise ConfigError(f"objective.ld_alpha must be in [0, 1], got {cfg.ld_alpha}")
        if cfg.sync_ref_model and cfg.precompute_ref_log_probs:
            raise ConfigError(
                "objective.sync_ref_model and objective.precompute_ref_log_probs cannot both be true: "
                "precomputed log-probs assume a fixed reference"
            )
