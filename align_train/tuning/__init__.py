"""Tuning strategies: which parameters move. The registry is the only way a recipe selects one."""

from align_train.errors import ConfigError
from align_train.tuning.base import TuningStrategy
from align_train.tuning.freeze import FreezeTuning
from align_train.tuning.full import FullTuning
from align_train.tuning.lora import LoraTuning
from align_train.tuning.nest import NestTuning

TUNING_STRATEGIES: dict[str, type[TuningStrategy]] = {
    "full": FullTuning,
    "lora": LoraTuning,
    "freeze": FreezeTuning,
    "nest": NestTuning,
}


def make_tuning(cfg) -> TuningStrategy:
    if cfg.name not in TUNING_STRATEGIES:
        raise ConfigError(f"tuning.name is '{cfg.name}'; expected one of {', '.join(TUNING_STRATEGIES)}")
    return TUNING_STRATEGIES[cfg.name](cfg)


__all__ = ["TUNING_STRATEGIES", "TuningStrategy", "make_tuning"]
