"""The ``align-train`` command (also ``python -m align_train``): check, then Hydra composes, ``train.run`` runs.

Recipes live in ``recipes/`` and are offered to Hydra as the ``recipe`` group:
``recipes/tiny/sft.yaml`` is ``recipe=tiny/sft``. Extra recipe directories can be added
with the ``ALIGN_TRAIN_RECIPES`` environment variable (os.pathsep-separated).

Before Hydra acts on anything (it instantiates callbacks and exports environment variables
from the composed config), the recipe files and any ``--config-dir`` are checked as untrusted
input (``recipes.py``), and the run's config is composed once and checked: an error names the
file or key and exits with code 2 before a directory is created.
"""

from __future__ import annotations

import os
import secrets
import sys
import time

import align_train.processes  # noqa: F401  (captures the user's environment before anything changes it)
from align_train.errors import AlignTrainError, ConfigError
from align_train.recipes import recipe_dirs, register_recipes  # noqa: F401  (the recipe group's home)

STAMP_ENV = "ALIGN_TRAIN_RUN_STAMP"
# Hydra's flags that take a value, and those align-train refuses: its primary config is fixed (recipes
# select everything), and a rerun unpickles a file from a run directory.
VALUE_FLAGS = {"--config-dir", "-cd", "--cfg", "-c", "--package", "-p", "--shell-completion", "-sc"}
REFUSED_FLAGS = {"--config-path": "align-train's primary config is fixed; select a recipe with recipe=NAME",
                 "-cp": "align-train's primary config is fixed; select a recipe with recipe=NAME",
                 "--config-name": "align-train's primary config is fixed; select a recipe with recipe=NAME",
                 "-cn": "align-train's primary config is fixed; select a recipe with recipe=NAME",
                 "--experimental-rerun": "it loads a pickled config from a run directory, which can run code"}
INFO_CHOICES = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}
NO_CHECK_FLAGS = {"--help", "-h", "--hydra-help", "--version", "--shell-completion", "-sc"}


def new_run_stamp() -> str:
    """Time to the second, then random: two launches in the same second never share a directory."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def shared_run_stamp() -> str:
    """One stamp for the run directory, the same on every process of a multi-process launch."""
    if STAMP_ENV in os.environ:
        return os.environ[STAMP_ENV]
    stamp = new_run_stamp()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate.utils import broadcast_object_list

        from align_train.distributed import process_state

        process_state()  # joins the process group the launcher set up
        stamp = broadcast_object_list([stamp])[0]
    return stamp


def setup() -> None:
    """Resolvers, schemas and recipes: everything Hydra must know before composing."""
    from omegaconf import OmegaConf

    from align_train.config import register_schemas
    from align_train.paths import register_resolvers
    from align_train.recipes import register_recipes

    register_resolvers()
    os.environ.setdefault(STAMP_ENV, shared_run_stamp())
    if not OmegaConf.has_resolver("run_stamp"):
        OmegaConf.register_new_resolver("run_stamp", lambda: os.environ[STAMP_ENV])
    register_schemas()
    register_recipes()


# --------------------------------------------------------------------------- the command line


def split_argv(argv: list[str]) -> tuple[dict[str, str | None], list[str]]:
    """Hydra's flags (``--multirun``, ``--config-dir DIR``...) and the overrides; refused flags raise."""
    flags: dict[str, str | None] = {}
    overrides: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=") if arg.startswith("-") else (arg, "", "")
        if name in REFUSED_FLAGS:
            raise ConfigError(f"{name} is not supported: {REFUSED_FLAGS[name]}")
        if not arg.startswith("-"):
            overrides.append(arg)
        elif name in VALUE_FLAGS:
            if not eq:
                i += 1
                value = argv[i] if i < len(argv) else ""
            flags[name] = value
        elif name in ("--info", "-i"):
            if i + 1 < len(argv) and argv[i + 1] in INFO_CHOICES:
                i += 1
            flags[name] = None
        else:
            flags[name] = None
        i += 1
    return flags, overrides


def first_sweep_point(overrides: list[str]) -> list[str]:
    """The overrides of a --multirun's first job (``a=1,2`` -> ``a=1``), to check before anything runs."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    out = []
    for override in parsed:
        if override.is_sweep_override():
            first = next(iter(override.sweep_string_iterator()), None)
            out.append(f"{override.get_key_element()}={first}")
        else:
            out.append(override.input_line)
    return out


def composition_error(err: Exception) -> ConfigError:
    """Hydra's composition error in align-train's words (no advice to add keys with '+'), naming the key or file."""
    from hydra.errors import OverrideParseException

    from align_train.recipes import recipe_dirs

    if isinstance(err, OverrideParseException):
        return ConfigError(f"the override '{err.override}' is not valid Hydra syntax ({str(err).splitlines()[0]}); "
                           "quote values with special characters, e.g. key='a b'")
    lines = [line.strip() for line in str(err).splitlines()
             if line.strip() and not line.strip().startswith("To append to your config use")]
    cause = err.__cause__
    if cause is not None and str(cause).strip():
        lines.append(str(cause).strip().splitlines()[0])
    text = " ".join(lines)
    key = getattr(cause, "full_key", None)
    if any(marker in text for marker in ("is not in struct", "not in '", "Could not override")):
        text += " - no such setting: the config is closed; check the spelling (--cfg job prints every setting)"
    for part in text.split("'"):
        if part.startswith("recipe/"):
            name = part.removeprefix("recipe/")
            for root in recipe_dirs():
                if (root / f"{name}.yaml").is_file():
                    text = text.replace(f"'{part}'", f"'{part}' ({root / f'{name}.yaml'})", 1)
                    break
    return ConfigError(f"{key}: {text}" if key and key not in text else text)


def compose(overrides: list[str], config_dir: str | None = None):
    """The config Hydra composes for these overrides (nothing runs), or ConfigError."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from align_train.paths import CONF_DIR

    extra = [f"hydra.searchpath=[file://{os.path.abspath(config_dir)}]"] if config_dir else []
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=overrides + extra)
    except AlignTrainError:
        raise
    except Exception as err:  # Hydra raises several kinds; each names the override or the file
        raise composition_error(err) from None


def preflight(flags: dict[str, str | None], overrides: list[str]) -> None:
    """Every check that needs nothing loaded, before Hydra creates or instantiates anything."""
    from pathlib import Path

    from align_train.recipes import check_config_dir, check_selected

    config_dir = flags.get("--config-dir") or flags.get("-cd")
    if config_dir:
        check_config_dir(config_dir)
    check_selected(overrides)
    multirun = "--multirun" in flags or "-m" in flags
    job = first_sweep_point(overrides) if multirun else overrides
    cfg = compose(job, config_dir)
    checks_only_config = any(f in flags for f in ("--cfg", "-c", "--info", "-i"))
    if cfg.stages:
        from align_train.pipeline import compose_stages

        cfg.output_dir = str(Path(cfg.output_dir))
        compose_stages(cfg, job)
    elif checks_only_config:
        from align_train.config import check_config

        check_config(cfg)
    else:
        from align_train.train import validate_config

        validate_config(cfg, int(os.environ.get("WORLD_SIZE", "1")))
    if multirun and not checks_only_config:
        from align_train.run_dir import run_contents

        root = Path(cfg.output_dir)
        if root.is_dir() and run_contents(root):
            raise ConfigError(f"--multirun: output_dir '{root}' holds a run; a sweep writes its runs into numbered "
                              "subdirectories of a directory of its own")


def _task(cfg) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    output_dir = os.path.abspath(cfg.output_dir)
    if hydra_cfg.mode == RunMode.MULTIRUN:  # one numbered directory per sweep point
        output_dir = os.path.join(output_dir, str(hydra_cfg.job.num))
    cfg.output_dir = output_dir
    overrides = list(hydra_cfg.overrides.task)
    try:
        if cfg.stages:  # a pipeline: every stage is composed again from these overrides
            from align_train.pipeline import run_pipeline

            run_pipeline(cfg, overrides)
        else:
            from align_train.train import run  # heavy imports only once the config composed

            run(cfg, overrides=overrides)
    except AlignTrainError as err:
        fail(err)


def fail(err: AlignTrainError) -> None:
    # A preempted run is not an error of the user's: it says so and exits "try again later" (75).
    label = "preempted" if getattr(err, "exit_code", None) else "error"
    print(f"align-train: {label}: {err}", file=sys.stderr)
    sys.exit(getattr(err, "exit_code", 2))


def main() -> None:
    import hydra

    from align_train.paths import CONF_DIR

    argv = sys.argv[1:]
    try:
        flags, overrides = split_argv(argv)
        setup()
        if not NO_CHECK_FLAGS & set(flags):
            preflight(flags, overrides)
    except AlignTrainError as err:
        fail(err)
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")(_task)()


if __name__ == "__main__":
    main()
