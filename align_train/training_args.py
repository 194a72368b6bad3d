"""The trainer arguments every objective shares, derived once from the run config.

The global batch is the setting (as in HALOs): gradient accumulation is derived from it,
the micro-batch and the number of processes, and must divide exactly. Nothing else sets it.
"""

from __future__ import annotations

from typing import Any

from align_train.errors import ConfigError
from align_train.tracking import trainer_args

PRECISIONS = ("fp32", "bf16", "fp16")

# Our config keys that own a trainer argument; trainer_kwargs may not set these behind their back.
OWNED = {
    "output_dir": "output_dir",
    "per_device_train_batch_size": "train.per_device_batch_size",
    "per_device_eval_batch_size": "train.eval_batch_size",
    "gradient_accumulation_steps": "train.global_batch_size",
    "learning_rate": "train.learning_rate",
    "num_train_epochs": "train.num_epochs",
    "max_steps": "train.max_steps",
    "lr_scheduler_type": "train.lr_scheduler",
    "warmup_steps": "train.warmup_ratio",
    "weight_decay": "train.weight_decay",
    "max_grad_norm": "train.max_grad_norm",
    "optim": "train.optim",
    "seed": "train.seed",
    "bf16": "train.precision",
    "fp16": "train.precision",
    "logging_steps": "train.logging_steps",
    "save_strategy": "train.save_steps",
    "save_steps": "train.save_steps",
    "save_total_limit": "train.save_total_limit",
    "eval_strategy": "train.eval_steps",
    "eval_steps": "train.eval_steps",
    "use_cpu": "train.use_cpu",
    "report_to": "logger.name",
    "project": "logger.project",
    "run_name": "run_name",
    "gradient_checkpointing": "model.gradient_checkpointing",
    "activation_checkpointing": "model.gradient_checkpointing",
    "max_length": "model.max_length",
    "trust_remote_code": "model.trust_remote_code",
    # SFT's template file: model.chat_template sets the template once for the trainer, the data check, the
    # evaluator and the saved tokenizer alike.
    "chat_template_path": "model.chat_template",
}


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def strategy_settings(cfg, overrides: list[str] | None = None) -> dict[str, dict]:
    """The training settings whose default depends on the tuning strategy: each one's value and origin.

    A setting left unset (``train.learning_rate=null``) takes the strategy's default (``train_defaults``);
    one that is set keeps its value. The origin says which: ``tuning=<name> default``, ``command line``
    (an override names it), ``recipe`` (set, but not on the command line), or ``config`` when the command
    line is unknown (a pipeline's stage, a config composed by a program).
    """
    from align_train.tuning import TUNING_STRATEGIES

    strategy = TUNING_STRATEGIES.get(cfg.tuning.name)
    defaults = strategy.train_defaults if strategy is not None else {}
    named = {_override_key(o) for o in overrides or []}
    settings = {}
    for key, default in defaults.items():
        value = cfg.train[key]
        if value is None:
            settings[key] = {"value": default, "origin": f"tuning={cfg.tuning.name} default"}
        elif overrides is None:
            settings[key] = {"value": value, "origin": "config"}
        else:
            settings[key] = {"value": value, "origin": "command line" if f"train.{key}" in named else "recipe"}
    return settings


def learning_rate(cfg) -> float:
    """train.learning_rate, or the tuning strategy's default where it is unset."""
    if cfg.train.learning_rate is not None:
        return cfg.train.learning_rate
    return strategy_settings(cfg)["learning_rate"]["value"]


def gradient_accumulation(train_cfg, world_size: int) -> int:
    """Accumulation steps so that micro-batch x processes x accumulation == global batch."""
    per_step = train_cfg.per_device_batch_size * world_size
    if train_cfg.per_device_batch_size < 1 or train_cfg.global_batch_size < 1:
        raise ConfigError("train.global_batch_size and train.per_device_batch_size must be >= 1")
    if train_cfg.global_batch_size % per_step:
        raise ConfigError(
            f"train.global_batch_size={train_cfg.global_batch_size} is not divisible by "
            f"train.per_device_batch_size={train_cfg.per_device_batch_size} x {world_size} process(es) = {per_step}"
        )
    return train_cfg.global_batch_size // per_step


def check_trainer_kwargs(extra: dict[str, Any], allowed: set[str]) -> None:
    for key in extra:
        if key in OWNED:
            raise ConfigError(f"train.trainer_kwargs.{key}: set it through '{OWNED[key]}' instead")
        if key not in allowed:
            raise ConfigError(f"train.trainer_kwargs.{key}: not a field of the objective's TRL config")


def check_trainer_kwarg_values(extra: dict[str, Any], config_class: type) -> None:
    """Values of trainer_kwargs against the choices the TRL config declares (checked only once tokenising starts)."""
    import dataclasses

    fields = {f.name: f for f in dataclasses.fields(config_class)}
    for key, value in extra.items():
        choices = fields[key].metadata.get("choices") if key in fields else None
        values = value if isinstance(value, (list, tuple)) else [value]
        if choices and any(v not in choices for v in values if v is not None):
            raise ConfigError(f"train.trainer_kwargs.{key} is {value!r}; expected one of {', '.join(map(str, choices))}")


def check_choices(train) -> None:
    """Names the trainer looks up only once it is built: its schedulers and optimizers."""
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    for key, value, names in (("train.precision", train.precision, PRECISIONS),
                              ("train.lr_scheduler", train.lr_scheduler, [s.value for s in SchedulerType]),
                              ("train.optim", train.optim, [o.value for o in OptimizerNames])):
        if value not in names:
            raise ConfigError(f"{key} is '{value}'; expected one of {', '.join(names)}")


def common_trainer_args(cfg, run_dir: str, world_size: int) -> dict[str, Any]:
    """TrainingArguments fields shared by every TRL trainer, from our config."""
    train = cfg.train
    check_choices(train)
    if not 0.0 <= train.warmup_ratio < 1.0:
        raise ConfigError(f"train.warmup_ratio must be in [0, 1), got {train.warmup_ratio}")
    args: dict[str, Any] = {
        "output_dir": run_dir,
        "per_device_train_batch_size": train.per_device_batch_size,
        "per_device_eval_batch_size": train.eval_batch_size or train.per_device_batch_size,
        "gradient_accumulation_steps": gradient_accumulation(train, world_size),
        "learning_rate": learning_rate(cfg),
        "num_train_epochs": train.num_epochs,
        "max_steps": train.max_steps,
        "lr_scheduler_type": train.lr_scheduler,
        "warmup_steps": train.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        "weight_decay": train.weight_decay,
        "max_grad_norm": train.max_grad_norm,
        "optim": train.optim,
        "seed": train.seed,
        # TRL defaults to bf16 autocast; we default to what the config says (fp32 unless asked).
        "bf16": train.precision == "bf16",
        "fp16": train.precision == "fp16",
        "logging_steps": train.logging_steps,
        "logging_first_step": True,
        "save_strategy": "steps" if train.save_steps > 0 else "no",
        "save_steps": train.save_steps if train.save_steps > 0 else 500,
        # Rotation is align-train's (run_dir.rotate): the trainer's deletes inside the save, before the new
        # checkpoint is complete, so a kill there would leave none.
        "save_total_limit": None,
        "eval_strategy": "steps" if train.eval_steps > 0 else "no",
        "eval_steps": train.eval_steps if train.eval_steps > 0 else None,
        "use_cpu": train.use_cpu,
        "dataloader_num_workers": train.dataloader_num_workers,
        **trainer_args(cfg.logger),  # report_to (logger.name) and trackio's project (logger.project)
        "run_name": cfg.run_name,
        # TRL defaults gradient checkpointing on; it is a model setting here, off unless asked.
        # (activation_checkpointing is transformers' current name; it overrides the deprecated alias.)
        "activation_checkpointing": cfg.model.gradient_checkpointing,
        "max_length": cfg.model.max_length,
        "disable_tqdm": True,
    }
    args.update(dict(train.trainer_kwargs))
    return args
