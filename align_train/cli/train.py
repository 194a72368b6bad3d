"""``align-train`` (also ``python -m align_train``): check the command line, then Hydra composes and ``train.run`` runs.

Recipes live in ``recipes/`` and are offered to Hydra as the ``recipe`` group:
``recipes/tiny/sft.yaml`` is ``recipe=tiny/sft``. Extra recipe directories can be added
with the ``ALIGN_TRAIN_RECIPES`` environment variable (os.pathsep-separated).

Before Hydra acts on anything (it instantiates callbacks and exports environment variables
from the composed config), the recipe files and any ``--config-dir`` are checked as untrusted
input (``recipes.py``), and the run's config is composed once and checked: an error names the
file or key and exits with code 2 before a directory is created.
"""

from __future__ import annotations

import importlib
import os
import sys

importlib.import_module("align_train.processes")  # first: it captures the user's environment before any import
from align_train.cli.errors import run_command  # noqa: E402
from align_train.composition import compose, setup  # noqa: E402
from align_train.errors import ConfigError  # noqa: E402

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
    if cfg.stages:  # a pipeline: every stage is composed again from these overrides
        from align_train.pipeline import run_pipeline

        run_command("align-train", run_pipeline, cfg, overrides)
    else:
        from align_train.train import run  # heavy imports only once the config composed

        run_command("align-train", run, cfg, (), overrides)


def check_command_line(argv: list[str]) -> None:
    flags, overrides = split_argv(argv)
    setup()
    if not NO_CHECK_FLAGS & set(flags):
        preflight(flags, overrides)


def main() -> None:
    import hydra

    from align_train.paths import CONF_DIR

    run_command("align-train", check_command_line, sys.argv[1:])
    hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")(_task)()


if __name__ == "__main__":
    main()
