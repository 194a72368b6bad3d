"""Where the project's own files live, and the resolvers that point recipes at them.

The bundled assets (``conf/``, ``recipes/``, ``data/``, ``launch/``) sit at the top of the
repository. An installed wheel carries the same folders as package data under
``align_train/_assets/`` (pyproject.toml maps them there); ``ASSETS_ROOT`` is whichever layout this
copy of the package has, so a run works the same from a clone, an editable install or a wheel,
from any working directory. Recipes name the files as ``${asset:data/tiny/sft.jsonl}``.

Public evaluation sets (AdvBench, XSTest) ship in ``data/datasets/`` with their licences.
``${shared:datasets/...}`` looks in the ``shared`` folder beside the checkout (or
``$ALIGN_TRAIN_SHARED``) first and falls back to the shipped copy.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

PACKAGE_DIR = Path(__file__).resolve().parent
ASSET_FOLDERS = ("conf", "recipes", "data", "launch")


def _assets_root() -> Path:
    """``$ALIGN_TRAIN_HOME``, else the installed package data, else the checkout the package sits in."""
    if os.environ.get("ALIGN_TRAIN_HOME"):
        return Path(os.environ["ALIGN_TRAIN_HOME"])
    installed = PACKAGE_DIR / "_assets"
    if (installed / "conf").is_dir():
        return installed
    return PACKAGE_DIR.parent


ASSETS_ROOT = _assets_root()
PROJECT_ROOT = ASSETS_ROOT  # the checkout in a clone; the package data in a wheel
CONF_DIR = ASSETS_ROOT / "conf"
RECIPES_DIR = ASSETS_ROOT / "recipes"
DATA_DIR = ASSETS_ROOT / "data"
LAUNCH_DIR = ASSETS_ROOT / "launch"
BUNDLED_DATASETS = DATA_DIR / "datasets"  # AdvBench and XSTest, with their licences (data/datasets/README.md)


def is_installed_layout() -> bool:
    """Whether the assets come from an installed wheel's package data (not a checkout)."""
    return ASSETS_ROOT == PACKAGE_DIR / "_assets"


def asset(relative: str) -> str:
    """Absolute path of a file shipped with the project (``data/...``)."""
    return str(ASSETS_ROOT / relative)


def shared_root() -> Path | None:
    """The folder of public evaluation data: ``$ALIGN_TRAIN_SHARED``, else ``shared`` beside a checkout."""
    if os.environ.get("ALIGN_TRAIN_SHARED"):
        return Path(os.environ["ALIGN_TRAIN_SHARED"])
    return None if is_installed_layout() else ASSETS_ROOT.parent / "shared"


def shared(relative: str) -> str:
    """Path of public evaluation data: the shared folder's copy when it has one, else the one shipped in data/.

    ``datasets/xstest_prompts.csv`` is ``../shared/datasets/xstest_prompts.csv`` beside a checkout that
    has it, and ``data/datasets/xstest_prompts.csv`` of the package otherwise (an installed wheel, a
    clone without the shared folder). A file in neither place resolves to the shared path, so the
    error that follows names where it was expected.
    """
    root = shared_root()
    candidate = root / relative if root is not None else None
    if candidate is not None and candidate.exists():
        return str(candidate)
    name = Path(relative)
    bundled = BUNDLED_DATASETS / (name.relative_to("datasets") if name.parts[:1] == ("datasets",) else name)
    return str(bundled) if bundled.exists() or candidate is None else str(candidate)


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("asset"):
        OmegaConf.register_new_resolver("asset", asset)
    if not OmegaConf.has_resolver("shared"):
        OmegaConf.register_new_resolver("shared", shared)
