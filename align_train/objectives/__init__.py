"""Objectives: what is optimised. The registry is the only way a recipe selects one."""

from align_train.errors import ConfigError
from align_train.objectives.base import Objective
from align_train.objectives.bco import BCOObjective
from align_train.objectives.cpo import CPOObjective
from align_train.objectives.dpo import DPOObjective
from align_train.objectives.kto import KTOObjective
from align_train.objectives.midtrain import MidtrainObjective
from align_train.objectives.orpo import ORPOObjective
from align_train.objectives.sft import SFTObjective
from align_train.objectives.simpo import SimPOObjective

OBJECTIVES: dict[str, type[Objective]] = {
    "midtrain": MidtrainObjective,
    "sft": SFTObjective,
    "dpo": DPOObjective,
    "kto": KTOObjective,
    "bco": BCOObjective,
    "simpo": SimPOObjective,
    "orpo": ORPOObjective,
    "cpo": CPOObjective,
}


def make_objective(cfg) -> Objective:
    if cfg.name not in OBJECTIVES:
        raise ConfigError(f"objective.name is '{cfg.name}'; expected one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[cfg.name](cfg)


__all__ = ["OBJECTIVES", "Objective", "make_objective"]
