"""align-train: alignment fine-tuning recipes over TRL, peft, accelerate and DeepSpeed."""

__version__ = "0.1.0"
