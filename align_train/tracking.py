"""Metrics: a local JSON Lines file always, and wandb through its transformers integration when asked.

wandb is configured by environment before the trainer starts: offline by default (no login,
no network, never a prompt inside a batch job), and the transformers integration only starts
it on the main process.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import time
from pathlib import Path

from transformers import TrainerCallback

from align_train.errors import ConfigError

WANDB_MODES = ("offline", "online", "disabled")
LOGGERS = ("none", "wandb")


class JsonlMetricsCallback(TrainerCallback):
    """Appends one JSON object per logging step to ``metrics.jsonl`` (main process only)."""

    def __init__(self, path: Path, extra: dict | None = None):
        self.path = Path(path)
        self.extra = extra or {}

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, "epoch": state.epoch, "time": time.time(), **self.extra}
        record.update({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in logs.items()})
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def check_logger(logger_cfg) -> None:
    if logger_cfg.name not in LOGGERS:
        raise ConfigError(f"logger.name is '{logger_cfg.name}'; expected one of {', '.join(LOGGERS)}")
    if logger_cfg.name != "wandb":
        return
    if logger_cfg.mode not in WANDB_MODES:
        raise ConfigError(f"logger.mode is '{logger_cfg.mode}'; expected one of {', '.join(WANDB_MODES)}")
    if importlib.util.find_spec("wandb") is None:
        raise ConfigError("logger=wandb needs the wandb package: pip install 'align-train[wandb]'")


def configure_logger(logger_cfg, run_dir: Path) -> None:
    """Environment for the transformers wandb integration; its files go under the run directory."""
    check_logger(logger_cfg)
    if logger_cfg.name != "wandb":
        return
    os.environ["WANDB_DIR"] = str(run_dir)
    os.environ["WANDB_MODE"] = logger_cfg.mode
    os.environ["WANDB_PROJECT"] = logger_cfg.project
    os.environ.setdefault("WANDB_SILENT", "true")
    if logger_cfg.entity:
        os.environ["WANDB_ENTITY"] = logger_cfg.entity
    if logger_cfg.tags:
        os.environ["WANDB_TAGS"] = ",".join(logger_cfg.tags)
