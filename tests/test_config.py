"""Config composition and validation: every shipped recipe and group option composes, and bad
configs fail before any model is loaded with a message naming the key."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from align_train.recipes import register_recipes
from align_train.errors import ConfigError
from align_train.paths import CONF_DIR, PROJECT_ROOT, RECIPES_DIR
from align_train.train import validate_config
from tests.conftest import compose_config

RECIPES = sorted(p.relative_to(RECIPES_DIR).with_suffix("").as_posix() for p in RECIPES_DIR.rglob("*.yaml"))
GROUP_OPTIONS = sorted(
    (group.name, option.stem)
    for group in CONF_DIR.iterdir()
    if group.is_dir()
    for option in group.glob("*.yaml")
)


def test_recipes_are_registered():
    assert set(RECIPES) <= set(register_recipes())
    assert {"tiny/sft", "tiny/dpo", "tiny/kto"} <= set(RECIPES)


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_composes_and_validates(recipe):
    cfg = compose_config(f"recipe={recipe}", output_dir="unused")
    objective, tuning, _ = validate_config(cfg)
    assert objective.name == cfg.objective.name and tuning.name == cfg.tuning.name
    assert cfg.run_name != "default", "a recipe names its runs"


@pytest.mark.parametrize("group,option", GROUP_OPTIONS)
def test_every_group_option_composes_and_validates(group, option):
    cfg = compose_config(f"{group}={option}", output_dir="unused")
    try:
        validate_config(cfg)
    except ConfigError as err:  # a tracker whose package is not installed here is refused, naming its extra
        assert group == "logger" and "needs its package, which is not installed: pip install 'align-train[" in str(err)


def test_recipe_overrides_groups_and_command_line_overrides_recipe():
    cfg = compose_config("recipe=tiny/kto", "objective.beta=0.05", "tuning=lora", "tuning.r=4")
    assert cfg.objective.name == "kto" and cfg.objective.beta == 0.05
    assert cfg.tuning.name == "lora" and cfg.tuning.r == 4
    assert cfg.run_name == "tiny-kto"


def test_default_config_is_the_tiny_dpo_recipe():
    default, tiny_dpo = compose_config(), compose_config("recipe=tiny/dpo")
    assert default == tiny_dpo


def test_unknown_key_fails_naming_it():
    with pytest.raises(ConfigCompositionException) as err:
        compose_config("objective.bogus=1")
    assert "bogus" in str(err.value.__cause__ or err.value)


def test_key_of_another_objective_fails():
    with pytest.raises(ConfigCompositionException) as err:
        compose_config("recipe=tiny/sft", "objective.beta=0.1")
    assert "beta" in str(err.value.__cause__)


def test_wrong_type_fails():
    with pytest.raises(ConfigCompositionException) as err:
        compose_config("objective.beta=abc")
    assert isinstance(err.value.__cause__, ValidationError)
    assert "beta" in str(err.value.__cause__)


def test_recipe_with_unknown_top_level_key_fails(tmp_path, monkeypatch):
    (tmp_path / "bad.yaml").write_text("# @package _global_\nlearning_rate: 0.1\n")
    monkeypatch.setenv("ALIGN_TRAIN_RECIPES", str(tmp_path))
    register_recipes()
    with pytest.raises(ConfigCompositionException) as err:
        compose_config("recipe=bad")
    assert "Key 'learning_rate' not in 'AlignConfig'" in str(err.value)


def test_recipes_cannot_instantiate_callables(tmp_path, monkeypatch):
    """No _target_ anywhere: a recipe selecting a callable fails as an unknown key."""
    for path in [*CONF_DIR.rglob("*.yaml"), *RECIPES_DIR.rglob("*.yaml")]:
        assert "_target_" not in path.read_text(), path
    (tmp_path / "evil.yaml").write_text("# @package _global_\nobjective:\n  _target_: os.system\n")
    monkeypatch.setenv("ALIGN_TRAIN_RECIPES", str(tmp_path))
    register_recipes()
    with pytest.raises(ConfigCompositionException):
        compose_config("recipe=evil")


def test_remote_code_is_off_by_default():
    for recipe in RECIPES:
        assert compose_config(f"recipe={recipe}").model.trust_remote_code is False


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["objective.loss_type=[sigmoid,sigmoidd]"], "objective.loss_type[1]"),
        (["objective.loss_type=[sigmoid,hinge]", "objective.loss_weights=[1.0]"], "objective.loss_weights"),
        (["objective.beta=0"], "objective.beta"),
        (["objective.loss_type=[robust]", "objective.label_smoothing=0.6"], "objective.label_smoothing"),
        (["objective.precompute_ref_log_probs=true", "objective.sync_ref_model=true"], "objective.sync_ref_model"),
        (["objective.loss_type=[exo_pair]"], "objective.label_smoothing"),
        (["objective.loss_type=[apo_zero]", "objective.f_divergence_type=js_divergence"], "objective.f_divergence_type"),
        (["objective.loss_type=[aot]", "objective.use_weighting=true"], "objective.use_weighting"),
        (["train.global_batch_size=12", "train.per_device_batch_size=8"], "train.global_batch_size"),
        (["train.precision=fp8"], "train.precision"),
        (["train.warmup_ratio=1.5"], "train.warmup_ratio"),
        (["+train.trainer_kwargs.learning_rate=0.1"], "train.learning_rate"),
        (["+train.trainer_kwargs.not_a_field=1"], "train.trainer_kwargs.not_a_field"),
        (["model.dtype=float8"], "model.dtype"),
        (["tuning=lora", "tuning.r=0"], "tuning.r"),
        (["tuning=freeze", "tuning.trainable=['(unclosed']"], "tuning.trainable[0]"),
        (["tuning=freeze", "tuning.trainable=[]"], "tuning.trainable"),
        (["recipe=tiny/kto", "train.per_device_batch_size=1", "train.global_batch_size=4"], "train.per_device_batch_size"),
        (["recipe=tiny/kto", "objective.loss_type=ipo"], "objective.loss_type"),
        (["logger=wandb", "logger.mode=sometimes"], "logger.mode"),
    ],
)
def test_semantic_errors_name_the_key(overrides, key):
    cfg = compose_config(*overrides, output_dir="unused")
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert key in str(err.value)


def test_trainer_kwargs_reach_the_trl_config():
    from align_train.objectives import make_objective
    from align_train.training_args import common_trainer_args

    cfg = compose_config("+train.trainer_kwargs.rpo_alpha=0.5", output_dir="unused")
    with pytest.raises(ConfigError):  # rpo_alpha is not a DPOConfig field in this TRL
        validate_config(cfg)
    cfg = compose_config("+train.trainer_kwargs.truncation_mode=keep_start", output_dir="unused")
    validate_config(cfg)
    assert common_trainer_args(cfg, "x", 1)["truncation_mode"] == "keep_start"
    assert make_objective(cfg.objective).trl_field_names() >= {"beta", "loss_type", "truncation_mode"}


def test_gradient_accumulation_is_derived_from_the_global_batch():
    from align_train.training_args import common_trainer_args

    cfg = compose_config("train.global_batch_size=32", "train.per_device_batch_size=4")
    assert common_trainer_args(cfg, "x", world_size=1)["gradient_accumulation_steps"] == 8
    assert common_trainer_args(cfg, "x", world_size=2)["gradient_accumulation_steps"] == 4
    with pytest.raises(ConfigError, match="not divisible"):
        common_trainer_args(cfg, "x", world_size=3)


def test_trl_cpu_unfriendly_defaults_are_overridden():
    """TRL defaults to bf16 autocast, gradient checkpointing and lr 1e-6; ours come from the config."""
    from align_train.objectives import make_objective
    from align_train.training_args import common_trainer_args

    cfg = compose_config()
    objective = make_objective(cfg.objective)
    data = type("D", (), {"format": "preference"})()
    args = objective.make_args(common_trainer_args(cfg, "/tmp/unused", 1), data)
    assert args.bf16 is False and args.activation_checkpointing is False
    assert cfg.train.learning_rate is None and args.learning_rate == 1e-4  # unset: full tuning's default


def test_no_machine_paths_in_shipped_files():
    launch = [p for p in (PROJECT_ROOT / "launch").rglob("*") if p.is_file()]
    for path in [*CONF_DIR.rglob("*.yaml"), *RECIPES_DIR.rglob("*.yaml"), *launch, PROJECT_ROOT / "README.md"]:
        if path.exists():
            assert "/work/" not in path.read_text() and "/root/" not in path.read_text(), path


@pytest.mark.parametrize("overrides, command_line, expected", [
    (["tuning=full"], [], (1e-4, "tuning=full default")),
    (["tuning=lora"], [], (1e-3, "tuning=lora default")),
    (["tuning=nest"], [], (1e-2, "tuning=nest default")),
    (["tuning=freeze"], [], (1e-4, "tuning=freeze default")),
    (["tuning=lora", "train.learning_rate=2e-4"], ["train.learning_rate=2e-4"], (2e-4, "command line")),
    (["recipe=tiny/sft", "tuning=lora"], [], (3e-4, "recipe")),  # the recipe's own rate wins over the default
    (["recipe=tiny/sft", "tuning=lora"], None, (3e-4, "config")),  # composed by a program: no command line known
])
def test_the_learning_rate_follows_the_strategy_unless_set_and_says_where_it_came_from(overrides, command_line,
                                                                                       expected):
    from align_train.training_args import common_trainer_args, strategy_settings

    cfg = compose_config(*overrides)
    setting = strategy_settings(cfg, command_line)["learning_rate"]
    assert (setting["value"], setting["origin"]) == expected
    assert common_trainer_args(cfg, "x", 1)["learning_rate"] == expected[0]
