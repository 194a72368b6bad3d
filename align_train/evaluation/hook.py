"""The evaluation hook: a TrainerCallback that scores the model at step 0, at each save, and at the end.

It runs on the main process only; the other processes go on to the next step and wait there,
as they would for a checkpoint write. Where the parameters are sharded (ZeRO-3, FSDP) the main
process does not hold the model, so the step is recorded as skipped and ``align-eval RUN_DIR``
(for instance in a separate job) scores the saved checkpoints with the same suites.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import TrainerCallback

from align_train.evaluation.evaluator import Evaluator, headline


class EvaluationCallback(TrainerCallback):
    def __init__(self, evaluator: Evaluator, tokenizer, metrics_path: Path, sharded: bool = False,
                 report_wandb: bool = False):
        self.evaluator = evaluator
        self.tokenizer = tokenizer
        self.metrics_path = Path(metrics_path)
        self.sharded = sharded
        self.report_wandb = report_wandb
        self.scored: list[int] = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        fresh = state.global_step == 0
        if self.evaluator.cfg.baseline and fresh and 0 not in self.evaluator.scored_steps():
            self._score(state, model, 0, is_reference=True)

    def on_save(self, args, state, control, model=None, **kwargs):
        if self.evaluator.cfg.on_save:
            self._score(state, model, state.global_step)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.evaluator.cfg.at_end and state.global_step not in self.scored:
            self._score(state, model, state.global_step)

    def _score(self, state, model, step: int, is_reference: bool = False) -> None:
        if not state.is_world_process_zero or step in self.scored:
            return
        self.scored.append(step)
        if self.sharded:
            self.evaluator.record_skip(step, "parameters are sharded (ZeRO-3 / FSDP): score with align-eval RUN_DIR")
            return
        record = self.evaluator.evaluate(model, self.tokenizer, step, is_reference=is_reference, label=f"step {step}")
        numbers = {f"eval/{k}": v for k, v in headline(record).items()}
        if record["errors"]:
            numbers["eval/errors"] = sorted(k for k in record["errors"] if not k.endswith("_traceback"))
        with self.metrics_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": step, "epoch": state.epoch, **numbers}) + "\n")
        if self.report_wandb:
            import wandb

            if wandb.run is not None:
                wandb.log({k: v for k, v in numbers.items() if not isinstance(v, list)} | {"train/global_step": step})
