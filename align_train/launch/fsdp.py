"""FSDP2 on CPU processes (gloo): accelerate shards only on accelerator devices; this lets it shard on CPUs.

``accelerate launch`` with ``distributed_type: FSDP`` sets ``ACCELERATE_USE_FSDP`` and the plugin's
settings (``FSDP_*``) for every process, but on a machine without GPUs accelerate's state turns the
run into plain multi-CPU data parallel (its FSDP switch lists only accelerator devices) and the
processes would each train an unsharded copy. torch's FSDP2 (``fully_shard``) itself runs on CPU
over gloo: parameters become DTensors holding 1/N of each weight. ``enable_cpu_fsdp`` builds
accelerate's state for the run once, before the trainer creates its ``Accelerator``, with the
FSDP plugin read from the launcher's environment, and ``trainer_args`` tells the trainer to use that
state (transformers otherwise resets it), so the trainer, accelerate's ``fsdp2_prepare_model`` and
TRL's reference-model wrapping take the FSDP2 path they take on GPUs.
"""

from __future__ import annotations

from align_train.errors import ConfigError


def enable_cpu_fsdp(launch, precision: str) -> bool:
    """Make accelerate shard with FSDP2 on this CPU process group; True when it did (FSDP launch, no GPU)."""
    if launch.kind != "fsdp" or _has_gpu():
        return False
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin, TorchDynamoPlugin

    from align_train.distributed import process_state

    state = process_state()
    if AcceleratorState._shared_state.get("fsdp_plugin") is not None:
        return True  # already set up (a pipeline's later stage in the same process)
    if state.distributed_type != DistributedType.MULTI_CPU:
        raise ConfigError(
            f"FSDP on CPU needs a process group of two or more processes (torchrun / accelerate launch "
            f"--num_processes N); this process is alone ({state.distributed_type})")
    plugin = FullyShardedDataParallelPlugin()  # fsdp_version, resharding, wrapping, state dict from FSDP_* variables
    if plugin.fsdp_version != 2:
        raise ConfigError(f"FSDP on CPU runs only as FSDP2 (fully_shard); the launch config sets fsdp_version="
                          f"{plugin.fsdp_version}: set fsdp_version: 2")
    # accelerate switches to FSDP only from an accelerator's multi-device type: present the process group as
    # one for the moment the state is built. The device stays the CPU and the backend gloo.
    PartialState._shared_state["distributed_type"] = DistributedType.MULTI_GPU
    try:
        AcceleratorState(mixed_precision={"bf16": "bf16", "fp16": "fp16"}.get(precision, "no"), cpu=True,
                         fsdp_plugin=plugin, dynamo_plugin=TorchDynamoPlugin(), _from_accelerator=True)
    finally:
        if PartialState._shared_state.get("distributed_type") == DistributedType.MULTI_GPU:
            PartialState._shared_state["distributed_type"] = DistributedType.MULTI_CPU
    if AcceleratorState().distributed_type != DistributedType.FSDP:  # pragma: no cover - an accelerate change
        raise RuntimeError(f"accelerate did not take FSDP on CPU ({AcceleratorState().distributed_type}); the "
                           "processes would train unsharded")
    return True


def trainer_args() -> dict:
    """Trainer arguments that keep the state ``enable_cpu_fsdp`` built (empty when it built none)."""
    from accelerate.state import AcceleratorState

    if AcceleratorState._shared_state.get("fsdp_plugin") is None or _has_gpu():
        return {}
    return {"accelerator_config": {"use_configured_state": True}}


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def save_whole(trainer) -> None:
    """Under FSDP, make the trainer's next save gather the whole model (``final/`` loads with from_pretrained).

    Checkpoints keep accelerate's sharded layout (fast, resumable on the same process count); with
    ``SHARDED_STATE_DICT`` the trainer's ``save_model`` writes no weights at all, so the final save
    switches to the full state dict, gathered onto the main process, which writes it.
    """
    plugin = getattr(trainer.accelerator.state, "fsdp_plugin", None)
    if plugin is not None and "FULL_STATE_DICT" not in str(plugin.state_dict_type):
        plugin.set_state_dict_type("FULL_STATE_DICT")
