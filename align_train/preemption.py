"""Preemption: on SIGTERM / SIGUSR1, checkpoint at the next step boundary and stop, to be resumed.

Clusters announce the end of a job with a signal (SLURM: ``--signal=USR1@<seconds>`` before the
time limit, SIGTERM on preemption). A checkpoint cannot be written from inside a signal handler
(a collective may be half done), so the handler only raises a flag. At the end of every optimizer
step the processes agree on the flag (a one-number all-reduce: a signal reaches the processes of
a multi-node job at slightly different moments, and all of them must save at the same step), and
then the trainer saves and stops. The run raises ``Preempted``; under SLURM the main process first
asks for the job to be requeued (``scontrol requeue``), and the requeued job, launched with
``resume=true``, continues from that checkpoint.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

from transformers import TrainerCallback

from align_train.distributed import any_process
from align_train.errors import AlignTrainError
from align_train.run_dir import RunDir

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
# EX_TEMPFAIL: "try again later"; what a preempted run is. The CLI exits with it.
PREEMPTED_EXIT_CODE = 75


class Preempted(AlignTrainError):
    """The run stopped on a signal after writing a checkpoint; it continues with resume=true."""

    exit_code = PREEMPTED_EXIT_CODE


class PreemptionCallback(TrainerCallback):
    """Turns SIGTERM / SIGUSR1 into "save a checkpoint and stop" at the next step boundary."""

    def __init__(self, signals=SIGNALS):
        self.signals = tuple(signals)
        self.received: int | None = None  # the signal number, once one arrived on this process
        self.stopped_at: int | None = None  # the step whose checkpoint was saved before stopping
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.received is None:
            print(f"[align-train] received {signal.Signals(signum).name}: saving a checkpoint at the next step "
                  "boundary, then stopping", file=sys.stderr, flush=True)
        self.received = signum

    def on_train_begin(self, args, state, control, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be installed from the main thread
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._handle)

    def on_step_end(self, args, state, control, **kwargs):
        if any_process(self.received is not None):
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step

    def on_train_end(self, args, state, control, **kwargs):
        self.restore()

    def restore(self) -> None:
        """Give the signals back to their previous handlers (also when training ended with an error)."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


def stop_after_preemption(callback: PreemptionCallback, run_dir: Path, is_main_process: bool) -> None:
    """Raise ``Preempted`` if the callback stopped the run; under SLURM, requeue the job first."""
    if callback.stopped_at is None:
        return
    requeued = ""
    job_id = os.environ.get("SLURM_JOB_ID")
    if job_id and is_main_process:
        from align_train.launch.slurm import requeue

        requeued = f"; {requeue(job_id)}"
    checkpoint = RunDir(run_dir).checkpoint(callback.stopped_at)
    raise Preempted(
        f"a signal arrived; saved {checkpoint} after step {callback.stopped_at} and stopped{requeued}. "
        "Run again with resume=true to continue from it."
    )
