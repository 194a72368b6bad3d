"""A NaN / inf loss stops the run (naming the step and the last good checkpoint), or skips the step.

Left alone, one non-finite loss turns every weight into NaN and the run goes on writing
useless checkpoints. The guard watches the loss of every micro-batch; before the optimizer
step the processes agree whether any of them saw a non-finite one (gradients are averaged
over processes, so one poisons all), and then either stop with a clear error, or, with
``train.skip_nonfinite_steps=true``, drop the step's gradients so the optimizer leaves every
parameter (and its own state) untouched.

Skipping needs the gradients on the parameters, which DeepSpeed keeps in its own buffers:
that combination is refused at start (see ``align_train.launch.checks``).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import torch
from transformers import TrainerCallback

from align_train.distributed import any_process
from align_train.errors import AlignTrainError


class NonFiniteLoss(AlignTrainError):
    """The loss became NaN or inf; the message names the step and the checkpoint to go back to."""


class NonFiniteGuard(TrainerCallback):
    def __init__(self, run_dir: Path, skip: bool = False):
        self.run_dir = Path(run_dir)
        self.skip = skip
        self.bad_value: float | None = None  # a non-finite loss seen on this process since the last step
        self.skipped_steps: list[int] = []

    def watch(self, trainer) -> None:
        """Wrap the trainer's ``training_step`` to look at each micro-batch's loss."""
        inner = trainer.training_step

        @functools.wraps(inner)
        def training_step(*args, **kwargs):
            loss = inner(*args, **kwargs)
            value = loss.detach().float()
            if not torch.isfinite(value).all():
                self.bad_value = value.sum().item()
            return loss

        trainer.training_step = training_step
        trainer.add_callback(self)

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        step = state.global_step + 1  # the step being taken
        if not any_process(self.bad_value is not None):
            return
        value, self.bad_value = self.bad_value, None
        if self.skip:
            self.skipped_steps.append(step)
            for parameter in (model.parameters() if model is not None else ()):
                parameter.grad = None  # torch optimizers skip parameters without a gradient
            if state.is_world_process_zero:
                print(f"[align-train] step {step}: non-finite loss, step skipped (train.skip_nonfinite_steps=true)",
                      file=sys.stderr, flush=True)
            return
        from align_train.run_dir import last_checkpoint

        checkpoint = last_checkpoint(self.run_dir)
        where = (f"the last good checkpoint is {checkpoint} (resume={checkpoint} continues from it)" if checkpoint
                 else "no checkpoint was saved before it")
        seen = f"loss {value}" if value is not None else "a non-finite loss on another process"
        raise NonFiniteLoss(
            f"non-finite loss at step {step} ({seen}); {where}. Lower train.learning_rate, check the data, or set "
            "train.skip_nonfinite_steps=true to skip such steps"
        )
