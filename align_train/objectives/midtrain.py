"""Midtraining: next-token loss on every token of documents, packed, through TRL's SFTTrainer.

Model-spec midtraining trains on synthetic documents that discuss the spec (``align-data
spec-docs``) before alignment fine-tuning. TRL's SFTTrainer already trains plain-text
(``documents``) data on every token and packs it; this adapter only fixes those choices, so
nothing of the loss is reimplemented. Mixing in a general corpus is the data layer's job (a
second ``data.train`` source with a ``weight``).
"""

from __future__ import annotations

from trl import SFTConfig, SFTTrainer

from align_train.data import DataBundle
from align_train.objectives.base import Objective, check_choice

PACKING_STRATEGIES = ("wrapped", "bfd", "bfd_split")


class MidtrainObjective(Objective):
    name = "midtrain"
    accepts = ("documents",)
    config_class = SFTConfig
    trainer_class = SFTTrainer
    logprob_outputs = ("log_probs", "entropy", "is_top1")  # what SFTTrainer asks its head for

    def validate(self, run_cfg) -> None:
        check_choice("objective.packing_strategy", self.cfg.packing_strategy, PACKING_STRATEGIES)

    def trl_kwargs(self, data: DataBundle) -> dict:
        return {
            **self.passthrough_kwargs(),
            "dataset_text_field": "text",
            "assistant_only_loss": False,  # documents: every token is a target
            "completion_only_loss": False,
        }
