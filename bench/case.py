"""One benchmark case, in a fresh process so that its peak memory is its own.

    python -m bench.case '{"kind": "align", "overrides": ["recipe=tiny/dpo", ...], "out": "DIR"}'
    python -m bench.case '{"kind": "trl_dpo", "model": "DIR", "rows": "FILE", ...}'

Prints one line ``RESULT {json}``: per-step wall times (optimizer steps, measured the same way for
every kind by a TrainerCallback), the logged losses, peak resident memory, trainable parameters and,
for the align-train kind, the run's summary figures.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

from transformers import TrainerCallback


class StepTimer(TrainerCallback):
    """Wall time of every optimizer step (all its micro-batches), and the memory when training starts."""

    def __init__(self):
        self.times: list[float] = []
        self.rss_at_train_begin_mb = None
        self._start = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.rss_at_train_begin_mb = peak_rss_mb()

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._start)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def current_rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def gpu_peak_mb() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def run_align(spec: dict, timer: StepTimer) -> dict:
    from align_train.composition import setup
    from hydra import compose, initialize_config_dir

    from align_train.paths import CONF_DIR
    from align_train.train import run

    setup()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(spec["overrides"]))
    cfg.output_dir = spec["out"]
    result = run(cfg, callbacks=[timer])
    log = [json.loads(line) for line in open(os.path.join(spec["out"], "metrics.jsonl"))]
    losses = [entry["loss"] for entry in log if "loss" in entry]
    return {"losses": losses, "trainable": result.parameters["trainable"], "total": result.parameters["total"],
            "steps": result.steps, "summary_after": result.after, "evaluations": result.evaluations}


def run_trl_dpo(spec: dict, timer: StepTimer) -> dict:
    from bench.plain_trl_dpo import train

    trainer = train(callbacks=[timer], **{k: v for k, v in spec.items() if k != "kind"})
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    params = list(trainer.model.parameters())
    return {"losses": losses, "trainable": sum(p.numel() for p in params if p.requires_grad),
            "total": sum(p.numel() for p in params), "steps": trainer.state.global_step}


def main() -> None:
    spec = json.loads(sys.argv[1])
    import torch  # noqa: F401  the libraries' own memory is the baseline, not the case's
    import transformers  # noqa: F401
    import trl  # noqa: F401

    baseline = current_rss_mb()
    timer = StepTimer()
    started = time.perf_counter()
    out = {"align": run_align, "trl_dpo": run_trl_dpo}[spec["kind"]](spec, timer)
    out.update(
        step_times=timer.times,
        wall_seconds=time.perf_counter() - started,
        peak_rss_mb=peak_rss_mb(),
        # what the case itself added on top of the imported libraries: model(s), data, optimiser, activations
        peak_above_baseline_mb=peak_rss_mb() - baseline,
        rss_at_train_begin_mb=timer.rss_at_train_begin_mb,
        gpu_peak_mb=gpu_peak_mb(),
    )
    if int(os.environ.get("RANK", "0")) == 0:
        print("RESULT " + json.dumps(out, default=str), flush=True)


if __name__ == "__main__":
    main()
