"""ORPO (Hong et al. 2024): the chosen answer's NLL plus an odds-ratio preference term; no reference model.

    odds(y|x) = p / (1 - p) with p = exp(mean log p(y|x)) (the mean over the completion's tokens)
    loss = NLL(y_w) - beta * log sigmoid(log odds(y_w|x) - log odds(y_l|x))

NLL(y_w) is the mean negative log-likelihood per chosen completion token over the batch, as in
the ORPO paper and TRL's trainer; beta is the paper's lambda.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from align_train.objectives.losses import LossContext, PairedLogps, PairedLoss
from align_train.objectives.reference_free import ReferenceFreeObjective, reward_metrics


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, computed stably on both sides of -log 2."""
    x = x.clamp(max=-1e-7)
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


class ORPOLoss(PairedLoss):
    needs_reference = False

    def __init__(self, beta: float):
        self.beta = beta

    def __call__(self, batch: PairedLogps, ctx: LossContext):
        chosen, rejected = batch.chosen_mean.float(), batch.rejected_mean.float()
        log_odds = (chosen - rejected) - (log1mexp(chosen) - log1mexp(rejected))
        ratio = F.logsigmoid(log_odds)
        loss = batch.chosen_nll - self.beta * ratio.mean()
        return loss, {**reward_metrics(self.beta * chosen, self.beta * rejected),
                      "log_odds_ratio": ratio.detach(), "log_odds": log_odds.detach()}


class ORPOObjective(ReferenceFreeObjective):
    name = "orpo"

    def make_loss(self) -> ORPOLoss:
        return ORPOLoss(self.cfg.beta)
