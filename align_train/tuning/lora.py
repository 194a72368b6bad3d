"""LoRA through peft. The base with adapters disabled is the reference model (no second copy).

The peft config is handed to the TRL trainer, which wraps the model itself. (A model wrapped
before the trainer sees it makes TRL copy the adapter into a "ref" adapter instead, because it
cannot know the adapter is fresh.) Its variants are peft's own: rsLoRA (``use_rslora``), DoRA
(``use_dora``), modules trained in full beside the adapters (``modules_to_save``), and QLoRA when
the base loads in 4 bits (``model.quantization``). ``target_modules`` may name the presets
``attention`` and ``mlp``, resolved against the loaded model, so one recipe fits every family
(Phi-3 fuses its projections into ``qkv_proj`` and ``gate_up_proj``).
"""

from __future__ import annotations

import copy
from pathlib import Path

from peft import LoraConfig
from torch import nn

from align_train import console
from align_train.errors import ConfigError
from align_train.models import save_model
from align_train.tuning.base import TuningStrategy

BIASES = ("none", "all", "lora_only")
ALL_LINEAR = "all-linear"  # peft: every linear layer but the output head
# Projection names per preset, across Llama, Qwen2 / Qwen3, Mistral, Gemma and Phi-3 (fused qkv / gate_up).
PRESETS = {
    "attention": ("q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj"),
    "mlp": ("gate_proj", "up_proj", "down_proj", "gate_up_proj"),
}


def module_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_modules()]


def matches(names: list[str], target: str) -> bool:
    """peft's rule for a module name: the whole name, or its last components."""
    return any(n == target or n.endswith("." + target) for n in names)


def linear_leaves(model: nn.Module) -> list[str]:
    return sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                   if not list(m.children()) and isinstance(m, nn.Linear)})


class LoraTuning(TuningStrategy):
    name = "lora"
    provides_reference = True
    # LoRA's low-rank update takes about ten times full tuning's rate (Schulman et al. 2025, "LoRA Without Regret").
    train_defaults = {"learning_rate": 1e-3}

    def __init__(self, cfg):
        super().__init__(cfg)
        self.targets: list[str] | None = None  # target_modules with the presets resolved against the model

    def validate(self) -> None:
        targets = list(self.cfg.target_modules)
        if ALL_LINEAR in targets and len(targets) > 1:
            raise ConfigError(f"tuning.target_modules: '{ALL_LINEAR}' already covers every linear layer; give it "
                              f"alone, not with {[t for t in targets if t != ALL_LINEAR]}")
        if self.cfg.r <= 0:
            raise ConfigError(f"tuning.r must be a positive rank, got {self.cfg.r}")
        if not 0.0 <= self.cfg.dropout < 1.0:
            raise ConfigError(f"tuning.dropout must be in [0, 1), got {self.cfg.dropout}")
        if self.cfg.bias not in BIASES:
            raise ConfigError(f"tuning.bias is '{self.cfg.bias}'; expected one of {', '.join(BIASES)}")
        if not self.cfg.target_modules:
            raise ConfigError("tuning.target_modules: name at least one module (or 'all-linear')")

    def peft_config(self) -> LoraConfig:
        """peft's config; before ``apply`` has seen the model, a preset stands for all of its names."""
        targets = self.targets or [n for t in self.cfg.target_modules for n in PRESETS.get(t, (t,))]
        return LoraConfig(
            r=self.cfg.r,
            lora_alpha=self.cfg.alpha,
            lora_dropout=self.cfg.dropout,
            target_modules=ALL_LINEAR if targets == [ALL_LINEAR] else targets,
            bias=self.cfg.bias,
            use_rslora=self.cfg.use_rslora,
            use_dora=self.cfg.use_dora,
            modules_to_save=list(self.cfg.modules_to_save) or None,
            task_type="CAUSAL_LM",
        )

    def resolve_targets(self, model: nn.Module) -> list[str]:
        """target_modules with each preset replaced by the names it has in this model; unknown names refused."""
        names = module_names(model)
        resolved: list[str] = []
        for target in self.cfg.target_modules:
            if target == ALL_LINEAR:
                return [ALL_LINEAR]
            if target in PRESETS:
                found = [n for n in PRESETS[target] if matches(names, n)]
                if not found:
                    raise ConfigError(
                        f"tuning.target_modules: the preset '{target}' looks for {', '.join(PRESETS[target])}, none "
                        f"of which {type(model).__name__} has; name its modules instead (its linear layers: "
                        f"{', '.join(linear_leaves(model))}), or use ['{ALL_LINEAR}']")
                resolved += [n for n in found if n not in resolved]
            elif not matches(names, target):
                raise ConfigError(f"tuning.target_modules: '{target}' matches no module of {type(model).__name__}; "
                                  f"its linear layers are: {', '.join(linear_leaves(model))} (presets: "
                                  f"{', '.join(PRESETS)}, {ALL_LINEAR})")
            elif target not in resolved:
                resolved.append(target)
        return resolved

    def apply(self, model: nn.Module) -> nn.Module:
        """Resolve and check the targets (the trainer wraps the model with ``trainer_kwargs``' peft config)."""
        self.targets = self.resolve_targets(model)
        console.log(f"LoRA adapters on {', '.join(self.targets)}", topic="lora")
        names = module_names(model)
        missing = [m for m in self.cfg.modules_to_save if not matches(names, m)]
        if missing:
            raise ConfigError(f"tuning.modules_to_save: {missing} match no module of {type(model).__name__} (e.g. "
                              "lm_head, embed_tokens, norm)")
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
