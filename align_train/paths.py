"""Where the project's own files live, and the ``${asset:...}`` resolver that points recipes at them.

Bundled assets (the tiny model, the tiny data sets, the config groups, the recipes) sit beside
the package in the repository. Recipes name them as ``${asset:data/tiny/sft.jsonl}`` so a run
works from any working directory. Public evaluation sets (AdvBench, XSTest) are not copied into
the repository; ``${shared:datasets/...}`` finds them in the ``shared`` folder beside it.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

PROJECT_ROOT = Path(os.environ.get("ALIGN_TRAIN_HOME", Path(__file__).resolve().parent.parent))
CONF_DIR = PROJECT_ROOT / "conf"
RECIPES_DIR = PROJECT_ROOT / "recipes"
DATA_DIR = PROJECT_ROOT / "data"


def asset(relative: str) -> str:
    """Absolute path of a file shipped with the project (``data/...``)."""
    return str(PROJECT_ROOT / relative)


def shared(relative: str) -> str:
    """Path of public evaluation data kept beside the project (``../shared``, or ``$ALIGN_TRAIN_SHARED``)."""
    root = os.environ.get("ALIGN_TRAIN_SHARED", str(PROJECT_ROOT.parent / "shared"))
    return str(Path(root) / relative)


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("asset"):
        OmegaConf.register_new_resolver("asset", asset)
    if not OmegaConf.has_resolver("shared"):
        OmegaConf.register_new_resolver("shared", shared)
