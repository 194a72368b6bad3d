"""LoRA through peft. The base with adapters disabled is the reference model (no second copy).

The peft config is handed to the TRL trainer, which wraps the model itself. (A model wrapped
before the trainer sees it makes TRL copy the adapter into a "ref" adapter instead, because it
cannot know the adapter is fresh.)
"""

from __future__ import annotations

import copy
from pathlib import Path

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

    def check_launch(self, launch) -> None:
        if launch.sharded and self.cfg.save_merged:
            raise ConfigError(
                f"tuning.save_merged=true cannot work under {launch.kind} with sharded parameters (ZeRO-3 / FSDP): the "
                "merge needs the whole model on one process. Train without it, then merge final/ on one machine with "
                "peft (AutoPeftModelForCausalLM.from_pretrained(...).merge_and_unload())"
            )

    def save_final(self, trainer, run_dir) -> str:
        """The adapter (peft's loader, or transformers with peft installed, loads it); merged model too if asked."""
        trainer.save_model(str(run_dir.final))
        if not self.cfg.save_merged:
            return "LoRA adapter (safetensors) and tokenizer"
        if trainer.accelerator.is_main_process:
            # Merge a copy: the trained peft model stays intact for anything that runs after saving.
            merged = copy.deepcopy(trainer.accelerator.unwrap_model(trainer.model)).merge_and_unload()
            save_model(merged, trainer.processing_class, str(run_dir.final_merged))
        return f"LoRA adapter and tokenizer; merged model in {run_dir.final_merged}"

    def final_model(self, run_dir) -> Path:
        """A following stage trains the merged model (pipelines require save_merged for a LoRA stage)."""
        return run_dir.final_merged

    @classmethod
    def claims(cls, directory: Path) -> bool:
        return (Path(directory) / "adapter_config.json").is_file()

    @classmethod
    def load_trained(cls, directory: str, model_cfg):
        """The adapter's base model (safetensors, no remote code unless asked) with the adapter on it.

        The adapter's weights load from adapter_model.safetensors only; a pickled adapter_model.bin
        is refused rather than unpickled.
        """
        import json

        from omegaconf import OmegaConf
        from peft import PeftModel

        from align_train.models import load_model

        directory = Path(directory)
        if not cls.claims(directory):
            return super().load_trained(str(directory), model_cfg)
        if not (directory / "adapter_model.safetensors").is_file():
            raise ConfigError(f"{directory}: the adapter's weights are not in adapter_model.safetensors (a pickled "
                              "adapter_model.bin is never loaded); save it with safe_serialization=True")
        base = json.loads((directory / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if not base:
            raise ConfigError(f"{directory / 'adapter_config.json'}: names no base_model_name_or_path")
        model = load_model(OmegaConf.merge(model_cfg, {"name_or_path": base, "init": "pretrained"}))
        return PeftModel.from_pretrained(model, str(directory))
