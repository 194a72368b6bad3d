"""The common part of the reference-free preference objectives (SimPO, ORPO, CPO): no reference in memory.

Each is a ``PairedLoss`` on DPO's data path (``losses.PairedLossTrainer``); the run builds no
reference copy for them and TRL loads none.
"""

from __future__ import annotations

import torch
from trl import DPOConfig

from align_train.objectives.base import Objective
from align_train.objectives.losses import PairedLoss, PairedLossTrainer


def reward_metrics(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> dict[str, torch.Tensor]:
    """What DPO logs about its rewards, for losses whose rewards are scaled log-probs."""
    chosen_rewards, rejected_rewards = chosen_rewards.detach(), rejected_rewards.detach()
    return {"rewards/chosen": chosen_rewards, "rewards/rejected": rejected_rewards,
            "rewards/accuracies": (chosen_rewards > rejected_rewards).float(),
            "rewards/margins": chosen_rewards - rejected_rewards}


class ReferenceFreeObjective(Objective):
    accepts = ("preference",)
    config_class = DPOConfig  # DPO's data path: tokenisation, batching, logging
    trainer_class = PairedLossTrainer

    def make_loss(self) -> PairedLoss:
        raise NotImplementedError

    def trainer_init_kwargs(self, data) -> dict:
        return {"loss": self.make_loss()}
