"""Which launcher a run is under, and the combinations with the run config that cannot work.

``accelerate launch`` describes the launch to every process through environment variables
(``ACCELERATE_USE_DEEPSPEED``, ``ACCELERATE_DEEPSPEED_CONFIG_FILE``, ``ACCELERATE_USE_FSDP``,
``ACCELERATE_MIXED_PRECISION``); ``align-launch`` reads the same facts from the accelerate YAML
before it submits a job. Either way the checks run before any model is loaded, so a combination
that cannot work fails in seconds with the config key named, not after an allocation and a load.

The batch, clipping and precision are set once, in the run config: a DeepSpeed JSON should say
"auto" for them (the trainer fills them in); a hard-coded value that disagrees is an error here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from align_train.errors import ConfigError
from align_train.paths import PROJECT_ROOT

TRUE = ("1", "true", "yes")
ENV_SOURCE = "the launcher's environment"


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


@dataclass
class Launch:
    """What the launcher set up: the kind of parallelism and its settings."""

    kind: str = "plain"  # plain | ddp | deepspeed | fsdp
    deepspeed_config_file: str | None = None
    deepspeed: dict = field(default_factory=dict)  # the parsed DeepSpeed JSON
    mixed_precision: str | None = None  # accelerate's mixed_precision, when the launcher set one
    fsdp: dict = field(default_factory=dict)  # FSDP settings the checks need (cpu_ram_efficient_loading)
    source: str = ENV_SOURCE

    @property
    def zero_stage(self) -> int | None:
        if self.kind != "deepspeed":
            return None
        return int(self.deepspeed.get("zero_optimization", {}).get("stage", 0))

    @property
    def sharded(self) -> bool:
        """No single process holds the whole model (ZeRO-3, FSDP)."""
        return self.kind == "fsdp" or self.zero_stage == 3


def resolve_config_path(path: str) -> Path:
    """A config path as given, else relative to the project (``launch/deepspeed/zero3.json`` from anywhere)."""
    candidate = Path(path)
    if candidate.is_file() or candidate.is_absolute():
        return candidate
    return PROJECT_ROOT / candidate


def read_deepspeed_config(path: str, named_by: str) -> dict:
    resolved = resolve_config_path(path)
    try:
        return json.loads(resolved.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{named_by}: DeepSpeed config '{path}' does not exist") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{named_by}: DeepSpeed config '{path}' is not valid JSON ({err})") from None


def launch_from_env(environ=None) -> Launch:
    env = os.environ if environ is None else environ
    precision = env.get("ACCELERATE_MIXED_PRECISION")
    if env.get("ACCELERATE_USE_DEEPSPEED", "").lower() in TRUE:
        path = env.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
        if path and not Path(path).is_file() and resolve_config_path(path).is_file():
            # The shipped accelerate configs name launch/deepspeed/*.json relative to the project; accelerate
            # opens the path from the working directory. Anchor it so they work from any directory.
            path = env["ACCELERATE_DEEPSPEED_CONFIG_FILE"] = str(resolve_config_path(path))
        config = read_deepspeed_config(path, "ACCELERATE_DEEPSPEED_CONFIG_FILE") if path else {
            "zero_optimization": {"stage": int(env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2"))}}
        return Launch("deepspeed", path, config, precision)
    if env.get("ACCELERATE_USE_FSDP", "").lower() in TRUE:
        loading = env.get("FSDP_CPU_RAM_EFFICIENT_LOADING", "").lower() in TRUE
        return Launch("fsdp", mixed_precision=precision, fsdp={"cpu_ram_efficient_loading": loading})
    if int(env.get("WORLD_SIZE", "1")) > 1:
        return Launch("ddp", mixed_precision=precision)
    return Launch("plain", mixed_precision=precision)


def launch_from_accelerate_config(path: str) -> Launch:
    """The same facts from an accelerate YAML (``align-launch`` checks a run before submitting it)."""
    from omegaconf import OmegaConf

    resolved = resolve_config_path(path)
    if not resolved.is_file():
        raise ConfigError(f"accelerate_config: '{path}' does not exist")
    config = OmegaConf.to_container(OmegaConf.load(resolved))
    kind = {"DEEPSPEED": "deepspeed", "FSDP": "fsdp", "MULTI_GPU": "ddp"}.get(str(config.get("distributed_type")), "plain")
    source = f"accelerate config '{path}'"
    launch = Launch(kind, mixed_precision=config.get("mixed_precision"), source=source)
    if kind == "fsdp":
        fsdp = config.get("fsdp_config") or {}
        launch.fsdp = {"cpu_ram_efficient_loading": bool(fsdp.get("fsdp_cpu_ram_efficient_loading", True))}
    if kind == "deepspeed":
        ds = config.get("deepspeed_config") or {}
        if ds.get("deepspeed_config_file"):
            launch.deepspeed_config_file = ds["deepspeed_config_file"]
            launch.deepspeed = read_deepspeed_config(ds["deepspeed_config_file"], source)
            if config.get("mixed_precision") not in (None, "no"):
                raise ConfigError(f"{source}: mixed_precision next to deepspeed_config_file is refused by accelerate; "
                                  "remove it and set train.precision (the JSON's bf16 / fp16 are 'auto')")
        else:
            launch.deepspeed = {"zero_optimization": {"stage": int(ds.get("zero_stage", 2))}}
    return launch


def check_machine(cfg) -> None:
    """What this machine cannot run (a recipe written for GPUs, started on a CPU-only one), before loading.

    Separate from ``check_launch``: a recipe is also validated where it will not run (align-launch on a
    login node, the test-suite), and only the run itself knows its machine.
    """
    train = cfg.train
    if train.precision in ("bf16", "fp16") and not train.use_cpu and not _has_gpu():
        raise ConfigError(
            f"train.precision={train.precision} needs a GPU, and this machine has none; set train.use_cpu=true (bf16 "
            "autocast runs on CPUs) or train.precision=fp32"
        )


def _fixed(config: dict, *keys: str):
    """A value of the DeepSpeed JSON that is set (not missing, not "auto")."""
    node = config
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return None if node == "auto" else node


def check_launch(cfg, world_size: int, launch: Launch | None = None) -> Launch:
    """Raise ConfigError for a run config that cannot work under this launch; return the launch."""
    from align_train.training_args import gradient_accumulation

    launch = launch or launch_from_env()
    train = cfg.train
    # accelerate passes 'no' when its config says nothing; the trainer's own setting then decides. A bf16 / fp16
    # there that train.precision does not ask for would be overridden by the trainer without a word.
    if launch.mixed_precision in ("bf16", "fp16") and launch.mixed_precision != train.precision:
        raise ConfigError(
            f"{launch.source} sets mixed_precision={launch.mixed_precision} but train.precision={train.precision}; "
            f"precision is set in one place: set train.precision={launch.mixed_precision} (and mixed_precision: "
            "'no' in the accelerate config)"
        )
    from align_train.tuning import make_tuning

    make_tuning(cfg.tuning).check_launch(launch)  # what the tuning strategy cannot run under (its own contract)
    on_cpu = train.use_cpu or (launch.source == ENV_SOURCE and not _has_gpu())
    if launch.kind == "fsdp" and on_cpu and world_size < 2:
        raise ConfigError(
            f"FSDP on CPU shards the model over two or more processes, and this run has {world_size}: launch it with "
            "accelerate launch --config_file launch/accelerate/fsdp.yaml --num_processes 2 (torch's FSDP2 over gloo), "
            "or run without the FSDP config"
        )
    if train.precision == "fp16" and train.use_cpu:
        raise ConfigError("train.precision=fp16 needs a GPU (fp16 mixed precision does not run on CPUs): with "
                          "train.use_cpu=true use bf16 or fp32")
    if launch.kind != "deepspeed":
        return launch

    ds, name = launch.deepspeed, launch.deepspeed_config_file or "DeepSpeed config"
    if train.skip_nonfinite_steps:
        raise ConfigError(
            "train.skip_nonfinite_steps=true cannot work under DeepSpeed: its engine keeps the gradients in its own "
            "buffers and steps inside backward, so a step cannot be dropped. Leave it false (a non-finite loss then "
            "stops the run, naming the last good checkpoint); with fp16, DeepSpeed's loss scaler skips overflow steps"
        )
    if "optimizer" in ds and train.optim != "adamw_torch":
        raise ConfigError(
            f"{name} names its own optimizer ({ds['optimizer'].get('type')}), so train.optim={train.optim} would be "
            "ignored; leave train.optim at adamw_torch or use a DeepSpeed config without an 'optimizer' section"
        )
    expected = {
        ("train_micro_batch_size_per_gpu",): (train.per_device_batch_size, "train.per_device_batch_size"),
        ("gradient_accumulation_steps",): (gradient_accumulation(train, world_size), "train.global_batch_size"),
        ("train_batch_size",): (train.global_batch_size, "train.global_batch_size"),
        ("gradient_clipping",): (train.max_grad_norm, "train.max_grad_norm"),
        ("bf16", "enabled"): (train.precision == "bf16", "train.precision"),
        ("fp16", "enabled"): (train.precision == "fp16", "train.precision"),
    }
    for keys, (value, key) in expected.items():
        fixed = _fixed(ds, *keys)
        if fixed is not None and fixed != value:
            raise ConfigError(
                f"{name} sets {'.'.join(keys)}={fixed!r} but the run config gives {value!r} (from {key}); set it to "
                "\"auto\" in the JSON so the trainer fills it in from the run config"
            )
    return launch
