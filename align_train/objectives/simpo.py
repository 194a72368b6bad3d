"""SimPO (Meng et al. 2024): a reference-free, length-normalised preference loss with a target margin.

    loss = -log sigmoid(beta * (mean log p(y_w|x) - mean log p(y_l|x)) - gamma)

The mean is over each completion's tokens: the implicit reward is the average log-likelihood, so
the loss does not favour longer answers, and no reference model is needed. With label smoothing
eps: (1 - eps) times that plus eps times the same with the pair swapped (as TRL's CPO trainer).
"""

from __future__ import annotations

import torch.nn.functional as F

from align_train.objectives.losses import LossContext, PairedLogps, PairedLoss
from align_train.objectives.reference_free import ReferenceFreeObjective, reward_metrics


class SimPOLoss(PairedLoss):
    needs_reference = False

    def __init__(self, beta: float, gamma: float, label_smoothing: float = 0.0):
        self.beta, self.gamma, self.label_smoothing = beta, gamma, label_smoothing

    def __call__(self, batch: PairedLogps, ctx: LossContext):
        logits = self.beta * (batch.chosen_mean - batch.rejected_mean) - self.gamma
        losses = (-F.logsigmoid(logits) * (1 - self.label_smoothing) - F.logsigmoid(-logits) * self.label_smoothing)
        return losses.mean(), reward_metrics(self.beta * batch.chosen_mean, self.beta * batch.rejected_mean)


class SimPOObjective(ReferenceFreeObjective):
    name = "simpo"

    def make_loss(self) -> SimPOLoss:
        return SimPOLoss(self.cfg.beta, self.cfg.gamma, self.cfg.label_smoothing)
