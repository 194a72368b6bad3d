"""Kahneman-Tversky optimisation on unpaired thumbs-up / thumbs-down data, through TRL's KTOTrainer.

Preference pairs are accepted too: the data layer converts each pair into a desirable
(chosen) and an undesirable (rejected) example.
"""

from __future__ import annotations

import dataclasses

from trl import KTOConfig, KTOTrainer

from align_train.data import DataBundle
from align_train.errors import ConfigError
from align_train.objectives.base import ReferenceObjective, check_choice, label_counts

# KTO paper: desirable_weight x n_desirable / (undesirable_weight x n_undesirable) should lie in [1, 4/3].
BALANCE_RANGE = (1.0, 4.0 / 3.0)


def trl_kto_loss_types() -> tuple[str, ...]:
    field = next(f for f in dataclasses.fields(KTOConfig) if f.name == "loss_type")
    return tuple(field.metadata.get("choices", ("kto",)))


class KTOObjective(ReferenceObjective):
    name = "kto"
    accepts = ("feedback",)
    config_class = KTOConfig
    trainer_class = KTOTrainer
    logprob_outputs = ("log_probs", "entropy", "mean_logits")  # what KTOTrainer asks its head for

    def validate(self, run_cfg) -> None:
        super().validate(run_cfg)
        cfg = self.cfg
        check_choice("objective.loss_type", cfg.loss_type, trl_kto_loss_types())
        if cfg.group_by_length and cfg.loss_type == "kto":
            raise ConfigError("objective.group_by_length cannot be used with KTO's loss_type=kto: its KL estimate "
                              "pairs neighbouring rows in a fixed order")
        if cfg.desirable_weight <= 0 or cfg.undesirable_weight <= 0:
            raise ConfigError("objective.desirable_weight and objective.undesirable_weight must be > 0")
        if cfg.loss_type == "kto" and run_cfg.train.per_device_batch_size < 2:
            raise ConfigError(
                "train.per_device_batch_size must be >= 2 for KTO: its KL estimate pairs each prompt with another "
                "example's completion within a micro-batch"
            )

    def check_data(self, data: DataBundle, tokenizer) -> list[str]:
        warnings = super().check_data(data, tokenizer)
        n_desirable, n_undesirable = label_counts(data, "KTO")
        balance = (self.cfg.desirable_weight * n_desirable) / (self.cfg.undesirable_weight * n_undesirable)
        low, high = BALANCE_RANGE
        if not low <= balance <= high:
            warnings.append(
                f"KTO balance desirable_weight*n_desirable / (undesirable_weight*n_undesirable) = {balance:.2f} "
                f"({n_desirable} desirable, {n_undesirable} undesirable) is outside the recommended "
                f"[{low}, {high:.2f}]; adjust objective.desirable_weight / objective.undesirable_weight"
            )
        return warnings

    def trl_kwargs(self, data: DataBundle) -> dict:
        # KTO's KL term pairs neighbours in a fixed-order batch; the data layer has already shuffled the rows.
        return {**self.passthrough_kwargs(), "train_sampling_strategy": "sequential"}
