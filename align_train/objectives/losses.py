"""Losses TRL does not ship, on TRL's own data paths: a loss is a function of log-probabilities.

TRL's DPOTrainer (paired: chosen and rejected) and KTOTrainer (unpaired: desirable and
undesirable) already do what such an objective needs besides its loss: tokenisation, batching,
the reference model (a frozen copy, the adapter-disabled base under LoRA, or precomputed
log-probs), distribution and logging. ``PairedLossTrainer`` and ``UnpairedLossTrainer`` keep all
of that and hand the policy's (and, when the loss asks for it, the reference's) log-probabilities
to a ``PairedLoss`` or ``UnpairedLoss``: a new objective is its loss class and a thin objective,
as in torchtune's ``PreferenceLoss``. Everything this file knows about TRL's internals (the
fused LM head's per-token log-probs, the reference forward, how TRL is kept from building a
reference a loss does not need) is here and nowhere else.
"""

from __future__ import annotations

import contextlib
import json
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint
from trl import DPOTrainer, KTOTrainer

# The batch keys that are model inputs (TRL's collators add labels, masks and reference log-probs beside them).
MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids")


@dataclass
class LossContext:
    """What a loss may need beside log-probabilities: whether it trains, and the processes to agree with."""

    training: bool
    accelerator: object


@dataclass
class PairedLogps:
    """Log-probabilities of a batch of preference pairs (one entry per pair)."""

    chosen: torch.Tensor  # summed log-prob of each chosen completion given its prompt
    rejected: torch.Tensor
    chosen_tokens: torch.Tensor  # completion tokens of each, for length-normalised losses
    rejected_tokens: torch.Tensor
    chosen_nll: torch.Tensor  # mean negative log-likelihood per chosen completion token, over the batch
    ref_chosen: torch.Tensor | None = None  # the reference's, when the loss needs a reference
    ref_rejected: torch.Tensor | None = None

    @property
    def chosen_mean(self) -> torch.Tensor:
        return self.chosen / self.chosen_tokens.clamp(min=1)

    @property
    def rejected_mean(self) -> torch.Tensor:
        return self.rejected / self.rejected_tokens.clamp(min=1)


@dataclass
class UnpairedLogps:
    """Log-probabilities of a batch of unpaired completions (desirable or not)."""

    logps: torch.Tensor  # summed log-prob of each completion given its prompt
    tokens: torch.Tensor
    desirable: torch.Tensor  # bool
    ref: torch.Tensor | None = None
    columns: dict[str, torch.Tensor] = field(default_factory=dict)  # the loss's own dataset columns (``columns``)


class PairedLoss(ABC):
    """A loss on preference pairs. ``__call__`` returns the loss and per-pair (or scalar) values to log."""

    needs_reference: bool = False

    @abstractmethod
    def __call__(self, batch: PairedLogps, ctx: LossContext) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ...


class UnpairedLoss(ABC):
    """A loss on unpaired completions; it may carry dataset columns and state saved with each checkpoint."""

    needs_reference: bool = True
    columns: tuple[str, ...] = ()  # dataset columns the loss reads (batched as float tensors)
    state_file: str | None = None  # file in each checkpoint holding ``state_dict()``

    @abstractmethod
    def __call__(self, batch: UnpairedLogps, ctx: LossContext) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@contextlib.contextmanager
def _without_reference(trainer_module, args):
    """While TRL builds a trainer for a loss without a reference: no reference model loaded, nothing hashed.

    TRL loads a reference copy from the model's path unless told the reference log-probs are
    precomputed; it is told so while it builds, and the precomputation itself does nothing
    (``_precompute_ref_logps`` below).
    """
    saved_flag, saved_hash = args.precompute_ref_log_probs, trainer_module.hash_module
    args.precompute_ref_log_probs = True
    trainer_module.hash_module = lambda module: None
    try:
        yield
    finally:
        args.precompute_ref_log_probs = saved_flag
        trainer_module.hash_module = saved_hash


def _sequence_logps(model, inputs) -> tuple[torch.Tensor, torch.Tensor, object]:
    """(per-token log-probs of the completion tokens, their mask, the model's outputs) through TRL's fused LM head."""
    kwargs = {k: inputs[k] for k in MODEL_INPUTS if inputs.get(k) is not None}
    kwargs["use_cache"] = False
    labels = inputs["input_ids"].masked_fill(inputs["completion_mask"] == 0, -100)
    outputs = model(**kwargs, labels=labels, fused_lm_head=True)
    mask = inputs["completion_mask"][..., 1:]
    # Prompt-learning PEFT prepends virtual tokens to the outputs; keep the positions of the real tokens
    return outputs.log_probs[:, -mask.size(1):], mask, outputs


def _log(trainer, mode: str, metrics: dict[str, torch.Tensor]) -> None:
    """Each value's mean over every process, into the trainer's logged metrics."""
    for name, value in metrics.items():
        value = value.detach().float().reshape(-1)
        if value.numel():
            trainer._metrics[mode][name].append(trainer.accelerator.gather_for_metrics(value).mean().item())


class PairedLossTrainer(DPOTrainer):
    """DPOTrainer's data path with ``loss`` (a PairedLoss) in place of TRL's DPO losses."""

    def __init__(self, *args, loss: PairedLoss, **kwargs):
        self.loss_fn = loss
        if loss.needs_reference:
            super().__init__(*args, **kwargs)
            return
        import trl.trainer.dpo_trainer as module

        with _without_reference(module, kwargs["args"]):
            super().__init__(*args, **kwargs)
        self.precompute_ref_logps = False

    def _precompute_ref_logps(self, dataset, name, batch_size):
        if not self.loss_fn.needs_reference:
            return dataset
        return super()._precompute_ref_logps(dataset, name, batch_size)

    def _compute_loss(self, model, inputs, return_outputs):
        mode = "train" if self.model.training else "eval"
        token_logps, mask, _ = _sequence_logps(model, inputs)
        logps, tokens = token_logps.sum(1), mask.sum(1)
        chosen_mask = mask.chunk(2)[0].bool()
        chosen_nll = -token_logps.chunk(2)[0][chosen_mask].mean()
        batch = PairedLogps(*logps.chunk(2), *tokens.chunk(2), chosen_nll=chosen_nll)
        if self.loss_fn.needs_reference:
            if self.precompute_ref_logps:
                batch.ref_chosen, batch.ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
            else:
                batch.ref_chosen, batch.ref_rejected = self.compute_ref_log_probs(self.ref_model or self.model, inputs)
        loss, metrics = self.loss_fn(batch, LossContext(mode == "train", self.accelerator))
        _log(self, mode, {"logps/chosen": batch.chosen, "logps/rejected": batch.rejected, "nll/chosen": chosen_nll,
                          **metrics})
        if return_outputs:
            with torch.no_grad():
                return loss, model(**{k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask")})
        return loss


class UnpairedLossTrainer(KTOTrainer):
    """KTOTrainer's unpaired data path (no mismatched KL batch) with ``loss`` (an UnpairedLoss) as the loss."""

    def __init__(self, *args, loss: UnpairedLoss, **kwargs):
        self.loss_fn = loss
        if loss.needs_reference:
            super().__init__(*args, **kwargs)
        else:
            import trl.trainer.kto_trainer as module

            with _without_reference(module, kwargs["args"]):
                super().__init__(*args, **kwargs)
            self.precompute_ref_logps = False
        if self.calculate_KL:
            raise ValueError("UnpairedLossTrainer needs loss_type='apo_zero_unpaired' (the data path without a KL batch)")
        collate, columns = self.data_collator, loss.columns

        def collate_with_columns(examples):
            batch = collate(examples)
            for column in columns:
                if column in examples[0]:
                    batch[column] = torch.tensor([float(e[column]) for e in examples], dtype=torch.float32)
            return batch

        self.data_collator = collate_with_columns

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        self._signature_columns = [*self._signature_columns, *(c for c in self.loss_fn.columns
                                                               if c not in self._signature_columns)]

    def _precompute_ref_logps(self, dataset, name, batch_size):
        if not self.loss_fn.needs_reference:
            return dataset
        return super()._precompute_ref_logps(dataset, name, batch_size)

    # ----------------------------------------------------------------- the loss's state in checkpoints

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.loss_fn.state_file and self.args.should_save:
            folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            with open(os.path.join(folder, self.loss_fn.state_file), "w") as handle:
                json.dump(self.loss_fn.state_dict(), handle)

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        checkpoint = get_last_checkpoint(self.args.output_dir) if resume_from_checkpoint is True else resume_from_checkpoint
        if checkpoint and self.loss_fn.state_file:
            path = os.path.join(checkpoint, self.loss_fn.state_file)
            if not os.path.isfile(path):
                raise ValueError(f"{checkpoint} has no {self.loss_fn.state_file}: it was not written by this objective")
            with open(path) as handle:
                self.loss_fn.load_state_dict(json.load(handle))
        return super().train(resume_from_checkpoint, *args, **kwargs)

    # ----------------------------------------------------------------- the loss

    def _compute_loss(self, model, inputs, return_outputs):
        mode = "train" if self.model.training else "eval"
        inputs = {k: (v.to(self.accelerator.device) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
        token_logps, mask, _ = _sequence_logps(model, inputs)
        batch = UnpairedLogps(token_logps.sum(1), mask.sum(1),
                              torch.as_tensor(inputs["label"], dtype=torch.bool, device=token_logps.device),
                              columns={c: inputs[c].to(token_logps.device) for c in self.loss_fn.columns if c in inputs})
        if self.loss_fn.needs_reference:
            batch.ref = self._reference_logps(inputs).to(token_logps.device)
        loss, metrics = self.loss_fn(batch, LossContext(mode == "train", self.accelerator))
        _log(self, mode, metrics)
        if return_outputs:
            with torch.no_grad():
                return loss, model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        return loss

    def _reference_logps(self, inputs) -> torch.Tensor:
        from accelerate.utils import is_peft_model
        from trl.models.utils import disable_gradient_checkpointing
        from trl.trainer.utils import use_adapter

        if self.precompute_ref_logps:
            return inputs["ref_logps"]
        with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            if is_peft_model(self.model) and self.ref_model is None:
                unwrapped = self.accelerator.unwrap_model(self.model)
                with use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None):
                    return _sequence_logps(self.model, inputs)[0].sum(1)
            return _sequence_logps(self.ref_model, inputs)[0].sum(1)
