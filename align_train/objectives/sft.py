"""Supervised fine-tuning on chat demonstrations or documents, through TRL's SFTTrainer."""

from __future__ import annotations

from trl import SFTConfig, SFTTrainer

from align_train.data import DataBundle
from align_train.errors import ConfigError
from align_train.objectives.base import Objective


class SFTObjective(Objective):
    name = "sft"
    accepts = ("messages", "documents")
    config_class = SFTConfig
    trainer_class = SFTTrainer
    logprob_outputs = ("log_probs", "entropy", "is_top1")  # what SFTTrainer asks its head for

    def check_data(self, data: DataBundle, tokenizer) -> list[str]:
        warnings = super().check_data(data, tokenizer)
        if self._assistant_only(data) and "generation" not in (tokenizer.chat_template or ""):
            raise ConfigError(
                "objective.assistant_only_loss=true needs a chat template that marks assistant turns with "
                "{% generation %}; this tokenizer's template does not. Set objective.assistant_only_loss=false "
                "to train on every token."
            )
        return warnings

    def _assistant_only(self, data: DataBundle) -> bool:
        # Documents have no assistant turns: every token is trained on.
        return self.cfg.assistant_only_loss and data.format == "messages"

    def trl_kwargs(self, data: DataBundle) -> dict:
        kwargs = {**self.passthrough_kwargs(), "assistant_only_loss": self._assistant_only(data)}
        if self.cfg.completion_only_loss is not None:
            kwargs["completion_only_loss"] = self.cfg.completion_only_loss
        return kwargs
