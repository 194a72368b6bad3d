"""The one error wrapper of the commands: an AlignTrainError is one line naming what to fix, and exit code 2."""

from __future__ import annotations

from typing import Callable

from align_train import console
from align_train.errors import AlignTrainError


def run_command(program: str, command: Callable, *args) -> None:
    """Run a command's body as ``program``; a user-facing error ends it with its message, no traceback."""
    console.PROGRAM[0] = program
    try:
        command(*args)
    except AlignTrainError as err:
        console.fail(err)
