"""CPO (Xu et al. 2024): DPO's loss without a reference model, plus behaviour cloning on the chosen answer.

    loss = -log sigmoid(beta * (log p(y_w|x) - log p(y_l|x))) + alpha * NLL(y_w)

log p are summed over the completion's tokens; NLL(y_w) is the mean negative log-likelihood per
chosen completion token over the batch (TRL's cpo_alpha weights it). With label smoothing eps the
first term is (1 - eps) times itself plus eps times the same with the pair swapped.
"""

from __future__ import annotations

import torch.nn.functional as F

from align_train.objectives.losses import LossContext, PairedLogps, PairedLoss
from align_train.objectives.reference_free import ReferenceFreeObjective, reward_metrics


class CPOLoss(PairedLoss):
    needs_reference = False

    def __init__(self, beta: float, alpha: float, label_smoothing: float = 0.0):
        self.beta, self.alpha, self.label_smoothing = beta, alpha, label_smoothing

    def __call__(self, batch: PairedLogps, ctx: LossContext):
        logits = self.beta * (batch.chosen - batch.rejected)
        losses = -F.logsigmoid(logits) * (1 - self.label_smoothing) - F.logsigmoid(-logits) * self.label_smoothing
        return losses.mean() + self.alpha * batch.chosen_nll, reward_metrics(self.beta * batch.chosen,
                                                                             self.beta * batch.rejected)


class CPOObjective(ReferenceFreeObjective):
    name = "cpo"

    def make_loss(self) -> CPOLoss:
        return CPOLoss(self.cfg.beta, self.cfg.alpha, self.cfg.label_smoothing)
