"""The ``align-train`` command (also ``python -m align_train``): Hydra composes, ``train.run`` runs.

Recipes live in ``recipes/`` and are offered to Hydra as the ``recipe`` group:
``recipes/tiny/sft.yaml`` is ``recipe=tiny/sft``. Extra recipe directories can be added
with the ``ALIGN_TRAIN_RECIPES`` environment variable (os.pathsep-separated).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from align_train.config import register_schemas
from align_train.errors import AlignTrainError
from align_train.paths import CONF_DIR, RECIPES_DIR, register_resolvers

STAMP_ENV = "ALIGN_TRAIN_RUN_STAMP"


def recipe_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("ALIGN_TRAIN_RECIPES", "").split(os.pathsep) if p]
    return [RECIPES_DIR, *extra]


def register_recipes(store: ConfigStore | None = None) -> dict[str, Path]:
    """Every recipe file as an option of the ``recipe`` group (package ``_global_``)."""
    store = store or ConfigStore.instance()
    found: dict[str, Path] = {}
    for root in recipe_dirs():
        for path in sorted(root.rglob("*.yaml")):
            rel = path.relative_to(root).with_suffix("")
            try:
                node = OmegaConf.load(path)
            except Exception as err:  # a broken recipe must not break every other recipe
                print(f"[align-train] warning: recipe {path} cannot be parsed: {err}", file=sys.stderr)
                continue
            group = "/".join(("recipe", *rel.parent.parts))
            store.store(group=group, name=rel.name, node=node, package="_global_", provider="align-train")
            found[rel.as_posix()] = path
    return found


def shared_run_stamp() -> str:
    """One timestamp for the run directory, the same on every process of a multi-process launch."""
    if STAMP_ENV in os.environ:
        return os.environ[STAMP_ENV]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate.utils import broadcast_object_list

        from align_train.distributed import process_state

        process_state()  # joins the process group the launcher set up
        stamp = broadcast_object_list([stamp])[0]
    return stamp


def setup() -> None:
    """Resolvers, schemas and recipes: everything Hydra must know before composing."""
    register_resolvers()
    os.environ.setdefault(STAMP_ENV, shared_run_stamp())
    if not OmegaConf.has_resolver("run_stamp"):
        OmegaConf.register_new_resolver("run_stamp", lambda: os.environ[STAMP_ENV])
    register_schemas()
    register_recipes()


def _task(cfg) -> None:
    from align_train.train import run  # heavy imports only once the config composed

    cfg.output_dir = HydraConfig.get().runtime.output_dir
    try:
        if cfg.stages:  # a pipeline: every stage is composed again from these overrides
            from align_train.pipeline import run_pipeline

            run_pipeline(cfg, list(HydraConfig.get().overrides.task))
        else:
            run(cfg)
    except AlignTrainError as err:
        # A preempted run is not an error of the user's: it says so and exits "try again later" (75).
        label = "preempted" if getattr(err, "exit_code", None) else "error"
        print(f"align-train: {label}: {err}", file=sys.stderr)
        sys.exit(getattr(err, "exit_code", 2))


def main() -> None:
    setup()
    hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")(_task)()


if __name__ == "__main__":
    main()
