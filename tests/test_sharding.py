"""Model reads shared out across processes: how batches are formed and dealt (the two-process runs in
test_launch check the gathered results against a one-process evaluation)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from align_train.inference import sharding
from align_train.inference.sharding import length_batches, map_batches, share


def test_batches_group_similar_lengths_longest_first():
    assert length_batches([3, 9, 1, 9, 5], batch_size=2) == [[1, 3], [4, 0], [2]]
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        length_batches([1], 0)


@pytest.mark.parametrize("n_batches, world", [(5, 2), (4, 2), (1, 2), (7, 3), (0, 2)])
def test_every_batch_runs_once_and_every_process_takes_the_same_number_of_turns(n_batches, world):
    shares = [share(n_batches, world, rank) for rank in range(world)]
    assert len({len(s) for s in shares}) == 1, "equal turns: the collective forward passes stay in step"
    ran = sorted(index for s in shares for index in s if index is not None)
    assert ran == list(range(n_batches))


def test_one_process_runs_batches_by_length_and_returns_results_in_input_order():
    items = ["aaaa", "b", "ccc", "dd", "eeeee"]
    seen = []

    def upper(batch):
        seen.append(batch)
        return [item.upper() for item in batch]

    assert map_batches(upper, items, batch_size=2, length=len) == [item.upper() for item in items]
    assert seen == [["eeeee", "aaaa"], ["ccc", "dd"], ["b"]]
    with pytest.raises(RuntimeError, match="returned 1 results for 2 items"):
        map_batches(lambda batch: batch[:1], items, batch_size=2)


@pytest.mark.parametrize("lockstep", [False, True])
def test_a_process_runs_only_its_share_and_keeps_step_where_parameters_are_sharded(monkeypatch, lockstep):
    """Process 1 of 2 over 3 batches: it runs batch 1, then (lockstep) a dropped one-item batch while process 0
    runs batch 2; the gathered results come back complete and in order."""
    import accelerate.utils

    items = [10, 20, 30, 40, 50]  # batches of 2 in input order: [10, 20], [30, 40], [50]
    calls = []

    def double(batch):
        calls.append(list(batch))
        return [2 * item for item in batch]

    other = {0: 20, 1: 40, 4: 100}  # what process 0 computed (batches 0 and 2)
    monkeypatch.setattr(sharding, "process_state", lambda: SimpleNamespace(num_processes=2, process_index=1))
    monkeypatch.setattr(accelerate.utils, "gather_object", lambda parts: [other, *parts])
    assert map_batches(double, items, batch_size=2, lockstep=lockstep) == [20, 40, 60, 80, 100]
    assert calls == ([[30, 40], [10]] if lockstep else [[30, 40]])


def test_the_vllm_backend_is_refused_with_its_reason_where_it_cannot_run():
    from align_train.errors import ConfigError
    from align_train.inference.vllm_backend import vllm_unavailable
    from align_train.train import validate_config
    from tests.conftest import compose_config

    reason = vllm_unavailable()
    if reason is None:
        pytest.skip("vLLM and a GPU are here")
    with pytest.raises(ConfigError, match=r"eval.refusal.generation.backend=vllm cannot run: .*(vLLM|GPU)"):
        validate_config(compose_config("recipe=tiny/sft", "eval.refusal.generation.backend=vllm"))
    with pytest.raises(ConfigError, match="eval.refusal.generation.backend is 'vlm'; expected one of"):
        validate_config(compose_config("recipe=tiny/sft", "eval.refusal.generation.backend=vlm"))
