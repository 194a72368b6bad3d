"""Prompt sets: the prompts an evaluation suite or NeST's probe reads, from a file or a hub dataset.

A row's prompt column may hold plain text or a list of chat messages (training data), whose last
user turn is taken. ``where`` keeps the rows whose columns equal the given values; a seeded sample
of ``max_prompts`` follows.
"""

from __future__ import annotations

import random

from align_train.data.sources import read_records
from align_train.errors import ConfigError, DataError


def prompt_text(value) -> str | None:
    """A prompt from a string, or the last user turn of a list of chat messages; None if neither (or blank)."""
    if isinstance(value, list):
        users = [m.get("content") for m in value if isinstance(m, dict) and m.get("role") == "user"]
        value = users[-1] if users else None
    return value if isinstance(value, str) and value.strip() else None


def load_prompts(key: str, cfg, seed: int) -> list[str]:
    """The prompts of a ``PromptSetConfig`` at config key ``key``: filtered by ``where``, then sampled."""
    if not cfg.path:
        raise ConfigError(f"{key}.path: the suite is enabled but names no prompt file or dataset")
    prompts = []
    for where, row in read_records(key, cfg.path, cfg.subset, cfg.split):
        if cfg.column not in row:
            raise DataError(f"{where}: no column '{cfg.column}' ({key}.column); present: {sorted(row)}")
        missing = [c for c in cfg.where if c not in row]
        if missing:
            raise DataError(f"{where}: {key}.where names column(s) {missing} that are absent; present: {sorted(row)}")
        if all(str(row[c]) == str(v) for c, v in cfg.where.items()):
            text = prompt_text(row[cfg.column])
            if text is None:
                raise DataError(f"{where}: '{cfg.column}' is empty, or neither a string nor chat messages with a user turn")
            prompts.append(text)
    if not prompts:
        raise DataError(f"{key}: no prompts in '{cfg.path}' match {dict(cfg.where)}")
    if len(prompts) > cfg.max_prompts:
        prompts = random.Random(seed).sample(prompts, cfg.max_prompts)
    return prompts
