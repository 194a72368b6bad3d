"""Binary Classifier Optimisation (Jung et al., 2024) as a narrow extension of TRL's KTOTrainer.

TRL 1.16 no longer ships a BCO trainer. Its KTOTrainer already holds everything BCO needs
(unpaired tokenisation, reference log-probs from a copy, the adapter-disabled base or a
precomputed column, distributed metrics); only the loss differs. The trainer runs with
KTO's ``apo_zero_unpaired`` data path, which builds no mismatched KL batch, so no forward
pass is spent on what BCO does not use. ``_compute_loss`` is replaced by BCO's:

    r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x))
    loss    = -mean_desirable[log sigmoid(r - delta)] - mean_undesirable[w(x) * log sigmoid(-(r - delta))]

delta, the reward shift, is the running mean of every reward (both kinds) seen in training
so far, this micro-batch included, summed over all processes; it is saved in each
checkpoint (``bco_state.json``) and restored on resume. w(x) are the underlying-distribution
matching weights of ``udm.py``, carried as a ``udm_weight`` column (1 for desirable rows).
"""

from __future__ import annotations

import json
import os

import torch
import torch.nn.functional as F
from accelerate.utils import is_peft_model
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint
from trl import KTOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import use_adapter

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


class BCOTrainer(KTOTrainer):
    """KTOTrainer with BCO's loss, reward shift and UDM weights."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.calculate_KL:
            raise ValueError("BCOTrainer needs loss_type='apo_zero_unpaired' (the data path without a KL batch)")
        self.reward_shift = RunningMean()
        self.udm_accuracy: float | None = None  # the UDM prompt classifier's held-out accuracy, logged with each step
        collate = self.data_collator

        def collate_with_weights(examples):
            batch = collate(examples)
            if WEIGHT_COLUMN in examples[0]:
                batch[WEIGHT_COLUMN] = torch.tensor([float(e[WEIGHT_COLUMN]) for e in examples], dtype=torch.float32)
            return batch

        self.data_collator = collate_with_weights

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if WEIGHT_COLUMN not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, WEIGHT_COLUMN]

    # ----------------------------------------------------------------- the reward shift in checkpoints

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            with open(os.path.join(folder, STATE_FILE), "w") as handle:
                json.dump(self.reward_shift.state_dict(), handle)

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        checkpoint = resume_from_checkpoint
        if checkpoint is True:
            checkpoint = get_last_checkpoint(self.args.output_dir)
        if checkpoint:
            path = os.path.join(checkpoint, STATE_FILE)
            if not os.path.isfile(path):
                raise ValueError(f"{checkpoint} has no {STATE_FILE}: it was not written by a BCO run")
            with open(path) as handle:
                self.reward_shift.load_state_dict(json.load(handle))
        return super().train(resume_from_checkpoint, *args, **kwargs)

    # ----------------------------------------------------------------- the loss

    def _completion_logps(self, model, model_kwargs, labels) -> torch.Tensor:
        outputs = model(**model_kwargs, labels=labels, fused_lm_head=True)
        # Prompt-learning PEFT prepends virtual tokens to the outputs; keep the positions of the real tokens
        return outputs.log_probs[:, -(labels.size(1) - 1):].sum(-1)

    def _reference_logps(self, batch, model_kwargs, labels) -> torch.Tensor:
        if self.precompute_ref_logps:
            return batch["ref_logps"]
        with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            if is_peft_model(self.model) and self.ref_model is None:
                unwrapped = self.accelerator.unwrap_model(self.model)
                with use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None):
                    return self._completion_logps(self.model, model_kwargs, labels)
            return self._completion_logps(self.ref_model, model_kwargs, labels)

    def _compute_loss(self, model, inputs, return_outputs):
        mode = "train" if self.model.training else "eval"
        batch = {k: (v.to(self.accelerator.device) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
        model_kwargs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "use_cache": False}
        labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)

        policy = self._completion_logps(model, model_kwargs, labels)
        reference = self._reference_logps(batch, model_kwargs, labels).to(policy.device)
        rewards = self.beta * (policy - reference)

        desirable = torch.as_tensor(batch["label"], dtype=torch.bool, device=policy.device)
        weights = batch.get(WEIGHT_COLUMN)
        rejected_weights = None if weights is None else weights.to(policy.device)[~desirable]
        if mode == "train":
            self.reward_shift.update(rewards, self.accelerator)
        delta = self.reward_shift.mean
        loss = bco_loss(rewards[desirable], rewards[~desirable], delta, rejected_weights)
        self._log_batch(mode, rewards.detach(), desirable, rejected_weights, delta)
        if return_outputs:
            with torch.no_grad():
                return loss, model(**model_kwargs)
        return loss

    def _log_batch(self, mode, rewards, desirable, rejected_weights, delta) -> None:
        """Rewards of each kind (means over all processes), their margin, delta and the UDM weights."""
        gather = self.accelerator.gather_for_metrics
        sums = torch.stack([rewards[desirable].sum(), desirable.sum().to(rewards.dtype),
                            rewards[~desirable].sum(), (~desirable).sum().to(rewards.dtype)])
        chosen_sum, n_chosen, rejected_sum, n_rejected = gather(sums.unsqueeze(0)).sum(0).tolist()
        metrics = self._metrics[mode]
        metrics["bco/delta"].append(delta)
        if n_chosen:
            metrics["rewards/chosen"].append(chosen_sum / n_chosen)
        if n_rejected:
            metrics["rewards/rejected"].append(rejected_sum / n_rejected)
        if n_chosen and n_rejected:
            metrics["rewards/margins"].append(chosen_sum / n_chosen - rejected_sum / n_rejected)
        if rejected_weights is not None and rejected_weights.numel():
            metrics["bco/udm_weight_mean"].append(rejected_weights.float().mean().item())
            metrics["bco/udm_weight_max"].append(rejected_weights.float().max().item())
        if self.udm_accuracy is not None:
            metrics["bco/udm_classifier_accuracy"].append(self.udm_accuracy)
