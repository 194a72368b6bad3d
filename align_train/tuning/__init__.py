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


def load_trained_model(directory: str, model_cfg, tuning_name: str | None = None):
    """A trained model directory for scoring, loaded by the strategy that wrote it.

    The run's strategy when known; otherwise the strategy whose artifact the directory holds (a
    LoRA adapter, NeST's parametrised checkpoint), else a plain model.
    """
    from pathlib import Path

    strategy = TUNING_STRATEGIES.get(tuning_name) if tuning_name else None
    if strategy is None or not strategy.claims(Path(directory)):
        strategy = next((s for s in TUNING_STRATEGIES.values() if s.claims(Path(directory))), FullTuning)
    return strategy.load_trained(directory, model_cfg)


__all__ = ["TUNING_STRATEGIES", "TuningStrategy", "load_trained_model", "make_tuning"]
