"""Composing a run's config: the one place Hydra's compose is called, and what it must know first.

``setup`` registers the resolvers (``${asset:...}``, ``${shared:...}``, ``${run_stamp:}``), the
schemas and the recipes (checked as untrusted input, ``recipes.py``). ``compose`` gives the config
Hydra composes for a list of overrides without running anything: the CLI checks a run with it
before Hydra acts, a pipeline composes each stage with it, align-eval and align-launch compose
what they need with it. Composition errors come back in align-train's words, naming the key or
the recipe file.
"""

from __future__ import annotations

import os
import secrets
import time

from align_train.errors import ConfigError

STAMP_ENV = "ALIGN_TRAIN_RUN_STAMP"


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
    """The config Hydra composes for these overrides (nothing runs), or ConfigError naming what is wrong.

    Inside a running align-train (a pipeline's stages) Hydra's own search path is used, so a
    ``--config-dir`` given on the command line applies to the stages too.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from align_train.paths import CONF_DIR

    try:
        if GlobalHydra.instance().is_initialized():
            return hydra_compose(config_name="config", overrides=list(overrides))
        extra = [f"hydra.searchpath=[file://{os.path.abspath(config_dir)}]"] if config_dir else []
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=list(overrides) + extra)
    except ConfigError:
        raise
    except Exception as err:  # Hydra raises several kinds; each names the override or the file
        raise composition_error(err) from None
