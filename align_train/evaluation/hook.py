"""The evaluation hook: a TrainerCallback that scores the model at step 0, at each save, and at the end.

Every process takes part: each generates and scores its share of the prompts and rows
(``inference.sharding``), so no process waits idle through an evaluation and none times out at
its next collective. Where the parameters are sharded (DeepSpeed ZeRO-3, FSDP) the forward passes
are collective and run in step on every process. The main process writes ``eval/step-N.json``
and the metrics line; the scores equal a one-process evaluation of the same weights.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import TrainerCallback

from align_train.distributed import on_main_process
from align_train.evaluation.evaluator import Evaluator, headline
from align_train.inference.sharding import reshard


class EvaluationCallback(TrainerCallback):
    def __init__(self, evaluator: Evaluator, tokenizer, metrics_path: Path, report_wandb: bool = False):
        self.evaluator = evaluator
        self.tokenizer = tokenizer
        self.metrics_path = Path(metrics_path)
        self.report_wandb = report_wandb
        self.scored: list[int] = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        fresh = state.global_step == 0
        # decided once, on the main process: every process must enter the evaluation together
        if self.evaluator.cfg.baseline and fresh and on_main_process(lambda: 0 not in self.evaluator.scored_steps()):
            self._score(state, model, 0, is_reference=True)

    def on_save(self, args, state, control, model=None, **kwargs):
        if self.evaluator.cfg.on_save:
            self._score(state, model, state.global_step)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.evaluator.cfg.at_end and state.global_step not in self.scored:
            self._score(state, model, state.global_step)

    def _score(self, state, model, step: int, is_reference: bool = False) -> None:
        if step in self.scored:
            return
        self.scored.append(step)
        try:
            record = self.evaluator.evaluate(model, self.tokenizer, step, is_reference=is_reference,
                                             label=f"step {step}")
        finally:
            if model is not None:
                reshard(model)
        if not state.is_world_process_zero:
            return
        numbers = {f"eval/{k}": v for k, v in headline(record).items()}
        if record["errors"]:
            numbers["eval/errors"] = sorted(k for k in record["errors"] if not k.endswith("_traceback"))
        with self.metrics_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": step, "epoch": state.epoch, **numbers}) + "\n")
        if self.report_wandb:
            import wandb

            if wandb.run is not None:
                wandb.log({k: v for k, v in numbers.items() if not isinstance(v, list)} | {"train/global_step": step})
