"""What a tuning strategy is: it decides which parameters move, and owns everything about its results.

A strategy never looks at the objective, and an objective never looks at the strategy: the
run wires them together. ``provides_reference`` tells the run whether the strategy keeps the
untouched base inside the trained model (LoRA with adapters disabled), so that preference
objectives need no separate reference copy. ``prepare`` sees the loaded model, the tokenizer
and the run directory before ``apply`` (NeST reads the model there to choose what trains).
``train_defaults`` are the training settings (the learning rate) the strategy suggests where the run sets
none. ``trainer_kwargs`` lets a strategy hand the trainer what it needs (LoRA hands TRL its peft
config) without the objective knowing. A strategy with artifacts of its own also owns how they
are saved (``save_final``), where the model a following pipeline stage starts from is
(``final_model``), how its final model and its checkpoints load for evaluation
(``load_trained``), and which launch setups it cannot run under (``check_launch``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from torch import nn


class TuningStrategy(ABC):
    name: str = ""
    provides_reference: bool = False
    # Training settings whose good value depends on how many parameters move: used where the run leaves the
    # setting unset (train.learning_rate=null). The smaller the trained part, the larger its steps must be.
    train_defaults: dict = {"learning_rate": 1e-4}

    def __init__(self, cfg):
        self.cfg = cfg

    def validate(self) -> None:
        """Config-only checks, run before any model is loaded."""

    def check_launch(self, launch) -> None:
        """Raise ConfigError for a launch setup (``launch.checks.Launch``) this strategy cannot run under."""

    def prepare(self, model: nn.Module, tokenizer, run_dir) -> None:
        """Work on the loaded, untouched model before ``apply`` (NeST probes it here, caching in ``run_dir``).

        Called on every process after the reference copy and the starting scores are taken.
        """

    @abstractmethod
    def apply(self, model: nn.Module) -> nn.Module:
        """Mark what trains (and wrap the model if needed); return the model to hand to the trainer."""

    def trainer_kwargs(self) -> dict:
        """Extra keyword arguments for the TRL trainer (e.g. a peft config); objectives pass them through."""
        return {}

    def save_final(self, trainer, run_dir) -> str:
        """Write the trained result and tokenizer to ``run_dir.final``; return a one-line description.

        Called on every process: the trainer gathers sharded weights (DeepSpeed ZeRO-3, FSDP) and
        writes on the main process only.
        """
        trainer.save_model(str(run_dir.final))
        return "full model (safetensors) and tokenizer"

    def final_model(self, run_dir) -> Path:
        """The model directory a following pipeline stage starts from."""
        return run_dir.final

    @classmethod
    def claims(cls, directory: Path) -> bool:
        """Whether a directory holds this strategy's own artifact (an adapter, parametrised weights)."""
        return False

    @classmethod
    def load_trained(cls, directory: str, model_cfg) -> nn.Module:
        """A trained model (``final/`` or a checkpoint) as a plain causal LM, for scoring."""
        from omegaconf import OmegaConf

        from align_train.models import load_model

        return load_model(OmegaConf.merge(model_cfg, {"name_or_path": str(directory), "init": "pretrained"}))
