"""The process group, joined before the trainer exists (for the run stamp, batch derivation, logging).

A bare ``PartialState()`` on a machine without GPUs does not join the launcher's process
group: under ``torchrun --nproc_per_node 2`` every process would believe it is the only one.
On CPU-only machines the gloo backend is asked for explicitly, as the trainer does with
``use_cpu``.
"""

from __future__ import annotations

import torch
from accelerate import PartialState


def process_state() -> PartialState:
    return PartialState(cpu=not torch.cuda.is_available())


def any_process(flag: bool) -> bool:
    """True on every process when the flag is set on any of them (every process must call this, together)."""
    from accelerate.utils import reduce

    state = process_state()
    value = torch.tensor([1.0 if flag else 0.0], device=state.device)
    if state.num_processes > 1:
        value = reduce(value, reduction="sum")
    return bool(value.item() > 0)


def on_main_process(fn):
    """``fn()`` on the main process; every process returns its result or raises its AlignTrainError.

    For decisions that must be made once and agreed (how a run starts in its directory): each
    process deciding for itself could race with what the main process does next.
    """
    from accelerate.utils import broadcast_object_list

    from align_train.errors import AlignTrainError

    state = process_state()
    result, error = None, None
    if state.is_main_process:
        try:
            result = fn()
        except AlignTrainError as err:
            error = err
    if state.num_processes > 1:
        result, error = broadcast_object_list([result, error])
    if error is not None:
        raise error
    return result
