"""LoRA through peft. The base with adapters disabled is the reference model (no second copy).

The peft config is handed to the TRL trainer, which wraps the model itself. (A model wrapped
before the trainer sees it makes TRL copy the adapter into a "ref" adapter instead, because it
cannot know the adapter is fresh.)
"""

from __future__ import annotations

import copy
import os

from peft import LoraConfig
from torch import nn

from align_train.errors import ConfigError
from align_train.models import save_model
from align_train.tuning.base import TuningStrategy

BIASES = ("none", "all", "lora_only")


class LoraTuning(TuningStrategy):
    name = "lora"
    provides_reference = True

    def validate(self) -> None:
        if self.cfg.r <= 0:
            raise ConfigError(f"tuning.r must be a positive rank, got {self.cfg.r}")
        if not 0.0 <= self.cfg.dropout < 1.0:
            raise ConfigError(f"tuning.dropout must be in [0, 1), got {self.cfg.dropout}")
        if self.cfg.bias not in BIASES:
            raise ConfigError(f"tuning.bias is '{self.cfg.bias}'; expected one of {', '.join(BIASES)}")
        if not self.cfg.target_modules:
            raise ConfigError("tuning.target_modules: name at least one module (or 'all-linear')")

    def peft_config(self) -> LoraConfig:
        targets = list(self.cfg.target_modules)
        return LoraConfig(
            r=self.cfg.r,
            lora_alpha=self.cfg.alpha,
            lora_dropout=self.cfg.dropout,
            target_modules="all-linear" if targets == ["all-linear"] else targets,
            bias=self.cfg.bias,
            use_rslora=self.cfg.use_rslora,
            modules_to_save=list(self.cfg.modules_to_save) or None,
            task_type="CAUSAL_LM",
        )

    def apply(self, model: nn.Module) -> nn.Module:
        """Check the targets exist (the trainer wraps the model with ``trainer_kwargs``' peft config)."""
        targets = list(self.cfg.target_modules)
        if targets != ["all-linear"]:
            names = [name for name, _ in model.named_modules()]
            missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
            if missing:
                leaves = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if not list(m.children())})
                raise ConfigError(
                    f"tuning.target_modules: {missing} match no module of the model; its leaf modules are: "
                    + ", ".join(leaves)
                )
        return model

    def trainer_kwargs(self) -> dict:
        return {"peft_config": self.peft_config()}

    def save_final(self, trainer, directory: str) -> str:
        """The adapter (peft's loader, or transformers with peft installed, loads it); merged model too if asked."""
        trainer.save_model(directory)
        if not self.cfg.save_merged:
            return "LoRA adapter (safetensors) and tokenizer"
        merged_dir = os.path.join(os.path.dirname(directory.rstrip("/")), "final-merged")
        if trainer.accelerator.is_main_process:
            # Merge a copy: the trained peft model stays intact for anything that runs after saving.
            merged = copy.deepcopy(trainer.accelerator.unwrap_model(trainer.model)).merge_and_unload()
            save_model(merged, trainer.processing_class, merged_dir)
        return f"LoRA adapter and tokenizer; merged model in {merged_dir}"
