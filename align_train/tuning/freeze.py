"""Partial fine-tuning: only parameters whose names match the configured patterns train."""

from __future__ import annotations

import re

from torch import nn

from align_train.errors import ConfigError
from align_train.tuning.base import TuningStrategy


class FreezeTuning(TuningStrategy):
    name = "freeze"

    def validate(self) -> None:
        if not self.cfg.trainable:
            raise ConfigError("tuning.trainable: freeze needs at least one parameter-name pattern to train")
        for i, pattern in enumerate(self.cfg.trainable):
            try:
                re.compile(pattern)
            except re.error as err:
                raise ConfigError(f"tuning.trainable[{i}]: '{pattern}' is not a valid regular expression ({err})")

    def apply(self, model: nn.Module) -> nn.Module:
        patterns = [re.compile(p) for p in self.cfg.trainable]
        names = []
        for name, param in model.named_parameters():
            param.requires_grad_(any(p.search(name) for p in patterns))
            names.append(name)
        unmatched = [p.pattern for p in patterns if not any(p.search(n) for n in names)]
        if unmatched:
            sample = ", ".join(names[:8])
            raise ConfigError(
                f"tuning.trainable: pattern(s) {unmatched} match no parameter of the model; names look like: {sample}"
            )
        return model
