"""BCO's loss on the unpaired path: binary classification of rewards, with reward shift and UDM weights.

    r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x))
    loss    = -mean_desirable[log sigmoid(r - delta)] - mean_undesirable[w(x) * log sigmoid(-(r - delta))]

delta, the reward shift, is the running mean of every reward (both kinds) seen in training so
far, this micro-batch included, summed over all processes; it is saved in each checkpoint
(``bco_state.json``) and restored on resume. w(x) are the underlying-distribution matching
weights of ``udm.py``, carried as a ``udm_weight`` column (1 for desirable rows). TRL 1.16 ships
no BCO trainer; the unpaired custom-loss path (``losses.UnpairedLossTrainer``, KTO's data path
without the mismatched KL batch) carries everything else.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from align_train.objectives.losses import LossContext, UnpairedLogps, UnpairedLoss

STATE_FILE = "bco_state.json"
WEIGHT_COLUMN = "udm_weight"


def bco_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, delta: float | torch.Tensor,
             rejected_weights: torch.Tensor | None = None) -> torch.Tensor:
    """BCO's loss from the rewards of one batch; a kind absent from the batch contributes nothing."""
    loss = chosen_rewards.new_zeros(())
    if chosen_rewards.numel():
        loss = loss - F.logsigmoid(chosen_rewards - delta).mean()
    if rejected_rewards.numel():
        terms = F.logsigmoid(-(rejected_rewards - delta))
        if rejected_weights is not None:
            terms = rejected_weights.to(terms.dtype) * terms
        loss = loss - terms.mean()
    return loss


class RunningMean:
    """The mean of every value seen so far, across processes (a sum and a count, in float64)."""

    def __init__(self):
        self.total = 0.0
        self.count = 0

    def update(self, values: torch.Tensor, accelerator=None) -> float:
        stats = torch.tensor([values.detach().double().sum().item(), float(values.numel())], dtype=torch.float64,
                             device=values.device)
        if accelerator is not None and accelerator.num_processes > 1:
            stats = accelerator.reduce(stats, reduction="sum")
        self.total += stats[0].item()
        self.count += int(stats[1].item())
        return self.mean

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def state_dict(self) -> dict:
        return {"total": self.total, "count": self.count, "delta": self.mean}

    def load_state_dict(self, state: dict) -> None:
        self.total, self.count = float(state["total"]), int(state["count"])


class BCOLoss(UnpairedLoss):
    needs_reference = True
    columns = (WEIGHT_COLUMN,)
    state_file = STATE_FILE

    def __init__(self, beta: float):
        self.beta = beta
        self.reward_shift = RunningMean()
        self.udm_accuracy: float | None = None  # the UDM prompt classifier's held-out accuracy, logged with each step

    def __call__(self, batch: UnpairedLogps, ctx: LossContext):
        rewards = self.beta * (batch.logps - batch.ref)
        desirable = batch.desirable
        weights = batch.columns.get(WEIGHT_COLUMN)
        rejected_weights = None if weights is None else weights[~desirable]
        if ctx.training:
            self.reward_shift.update(rewards, ctx.accelerator)
        delta = self.reward_shift.mean
        loss = bco_loss(rewards[desirable], rewards[~desirable], delta, rejected_weights)
        return loss, self.logged(rewards.detach(), desirable, rejected_weights, delta, ctx)

    def logged(self, rewards, desirable, rejected_weights, delta, ctx) -> dict[str, torch.Tensor]:
        """Rewards of each kind (means over all processes, however the kinds fall per process), delta, UDM weights."""
        sums = torch.stack([rewards[desirable].sum(), desirable.sum().to(rewards.dtype),
                            rewards[~desirable].sum(), (~desirable).sum().to(rewards.dtype)])
        chosen_sum, n_chosen, rejected_sum, n_rejected = ctx.accelerator.gather_for_metrics(
            sums.unsqueeze(0)).sum(0).tolist()
        out = {"bco/delta": torch.tensor(delta)}
        if n_chosen:
            out["rewards/chosen"] = torch.tensor(chosen_sum / n_chosen)
        if n_rejected:
            out["rewards/rejected"] = torch.tensor(rejected_sum / n_rejected)
        if n_chosen and n_rejected:
            out["rewards/margins"] = torch.tensor(chosen_sum / n_chosen - rejected_sum / n_rejected)
        if rejected_weights is not None and rejected_weights.numel():
            out["bco/udm_weight_mean"] = rejected_weights.float().mean()
            out["bco/udm_weight_max"] = rejected_weights.float().max()
        if self.udm_accuracy is not None:
            out["bco/udm_classifier_accuracy"] = torch.tensor(self.udm_accuracy)
        return out

    def state_dict(self) -> dict:
        return self.reward_shift.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.reward_shift.load_state_dict(state)
