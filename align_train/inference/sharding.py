"""Model reads shared out across the processes of a distributed run, and gathered back.

The evaluation hook runs on every process: each one generates (or scores) its share of the
prompts, and every process gets all the results, in input order. Batches are formed the same way
whatever the number of processes (longest first, cut every ``batch_size`` items) and then dealt
out round-robin, so a batch's contents, its padding and therefore its outputs do not depend on
how many processes share the work: a two-process evaluation equals a one-process one.

Where parameters are sharded (DeepSpeed ZeRO-3, FSDP) a forward pass is collective: every process
must take part in every one. There each process runs the same number of batches, a process whose
share has run out repeating a one-item batch whose result is dropped, and ``generate`` keeps the
processes in step itself (transformers' ``synced_gpus``, on whenever it finds ZeRO-3 or FSDP).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

from align_train.distributed import process_state


def parameters_sharded(model) -> bool:
    """True when a forward pass of ``model`` needs every process (ZeRO-3, FSDP) in a multi-process run."""
    if process_state().num_processes < 2:
        return False
    from torch.distributed.fsdp import FSDPModule
    from transformers.distributed.fsdp import is_fsdp_managed_module
    from transformers.integrations import is_deepspeed_zero3_enabled

    return bool(is_deepspeed_zero3_enabled() or is_fsdp_managed_module(model) or isinstance(model, FSDPModule))


def reshard(model) -> None:
    """Give back the whole parameters an FSDP2 forward left gathered (its root keeps them after a forward that
    no backward follows): after an evaluation every process holds its shard again, not the whole model."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first (ties keep input order)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def share(n_batches: int, world: int, rank: int) -> list[int | None]:
    """The batches process ``rank`` of ``world`` runs, dealt round-robin; ``None`` where its share has run out
    before the others' (every process gets the same number of turns)."""
    turns = math.ceil(n_batches / world)
    return [index if index < n_batches else None for index in range(rank, turns * world, world)]


def map_batches(fn: Callable[[list], list], items: Sequence, batch_size: int,
                length: Callable | None = None, lockstep: bool = False) -> list:
    """``fn`` over batches of ``items`` shared out across processes; its per-item results, in input order,
    on every process.

    ``fn(batch)`` returns one result per item. ``length(item)`` groups items of similar length
    (less padding); without it batches follow the input order. ``lockstep``: every process runs
    the same number of batches (needed where parameters are sharded).
    """
    items = list(items)
    lengths = [length(item) for item in items] if length else [0] * len(items)
    batches = length_batches(lengths, batch_size) if length else \
        [list(range(s, min(s + batch_size, len(items)))) for s in range(0, len(items), batch_size)]
    state = process_state()
    world, rank = state.num_processes, state.process_index
    local: dict[int, object] = {}
    for index in share(len(batches), world, rank):
        if index is not None:
            batch = batches[index]
            results = fn([items[i] for i in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{getattr(fn, '__name__', fn)} returned {len(results)} results for {len(batch)} items")
            local.update(zip(batch, results))
        elif lockstep:
            fn([items[batches[0][0]]])  # keeps this process in the collective forward passes; result dropped
    if world < 2:
        return [local[i] for i in range(len(items))]
    from accelerate.utils import gather_object

    merged: dict[int, object] = {}
    for part in gather_object([local]):
        merged.update(part)
    return [merged[i] for i in range(len(items))]
