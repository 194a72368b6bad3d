"""What a tuning strategy is: it decides which parameters move and how the result is saved.

A strategy never looks at the objective, and an objective never looks at the strategy: the
run wires them together. ``provides_reference`` tells the run whether the strategy keeps the
untouched base inside the trained model (LoRA with adapters disabled), so that preference
objectives need no separate reference copy. ``prepare`` sees the loaded model, the tokenizer
and the run directory before ``apply`` (NeST reads the model there to choose what trains).
``trainer_kwargs`` lets a strategy hand the trainer what it needs (LoRA hands TRL its peft
config) without the objective knowing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import nn


class TuningStrategy(ABC):
    name: str = ""
    provides_reference: bool = False

    def __init__(self, cfg):
        self.cfg = cfg

    def validate(self) -> None:
        """Config-only checks, run before any model is loaded."""

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

    def save_final(self, trainer, directory: str) -> str:
        """Write the trained result and tokenizer to ``directory``; return a one-line description.

        Called on every process: the trainer gathers sharded weights (DeepSpeed ZeRO-3, FSDP) and
        writes on the main process only.
        """
        trainer.save_model(directory)
        return "full model (safetensors) and tokenizer"
