"""What align-train tells a person: one line per event, on the main process, on stderr.

Every part of the run reports through here (``log``), and every command reports its failure
through ``fail``, so messages look the same wherever they come from and a multi-process run
prints each once. Standard output is kept for what a command produces (a summary, a job
script, a table).
"""

from __future__ import annotations

import sys

PROGRAM = ["align-train"]  # the command being run, named in every line (set by the entry point)


def is_main_process() -> bool:
    from align_train.distributed import process_state

    return process_state().is_main_process


def log(message: str, topic: str | None = None, every_process: bool = False) -> None:
    """``[align-train] topic: message`` on stderr (main process only unless asked)."""
    if every_process or is_main_process():
        prefix = f"[{PROGRAM[0]}] " + (f"{topic}: " if topic else "")
        print(prefix + message, file=sys.stderr, flush=True)


def fail(err: BaseException, exit_code: int = 2) -> None:
    """``align-train: error: ...`` and the exit code (a preempted run says so and exits 75)."""
    code = getattr(err, "exit_code", None) or exit_code
    label = "preempted" if getattr(err, "exit_code", None) else "error"
    print(f"{PROGRAM[0]}: {label}: {err}", file=sys.stderr, flush=True)
    sys.exit(code)
