"""Shared fixtures: Hydra composition of the real conf/ and recipes/, and fast tiny runs."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # two busy threads on two cores are 40x slower per step
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download: embedded model, bundled data

import pytest
import torch
from hydra import compose, initialize_config_dir

from align_train.composition import setup
from align_train.paths import CONF_DIR

torch.set_num_threads(1)
setup()

# The slowest files, slowest first (measured with --durations). `make test` hands whole files to two workers in
# collection order (--no-loadscope-reorder): starting with the longest ones lets both workers end together.
SLOWEST_FIRST = ("test_launch.py", "test_training.py", "test_consumption.py", "test_bco.py", "test_faults.py",
                 "test_nest.py", "test_model_families.py", "test_evaluation.py", "test_cli.py",
                 "test_reference_free.py", "test_pipeline.py", "test_security.py", "test_logprob_head.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's own order is kept


# Overrides that keep an end-to-end run to a few seconds on a CPU.
FAST = ["train.max_steps=4", "train.save_steps=0", "data.max_eval_rows=16"]


def compose_config(*overrides: str, output_dir=None):
    """The config the CLI would compose for these overrides."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    if output_dir is not None:
        cfg.output_dir = str(output_dir)
    return cfg


def run_recipe(output_dir, *overrides: str):
    """Compose and run in-process (the CLI minus Hydra's job wrapper); returns the RunResult."""
    from align_train.train import run

    return run(compose_config(*overrides, output_dir=output_dir))


@pytest.fixture
def tiny_tokenizer():
    from align_train.models import load_tokenizer

    return load_tokenizer(compose_config().model)


@pytest.fixture(autouse=True)
def _console_names_align_train():
    """An entry point run in-process (align-eval, align-data) renames the console's program for the rest of the
    process; each test starts from align-train's."""
    from align_train import console

    console.PROGRAM[0] = "align-train"
    yield
    console.PROGRAM[0] = "align-train"
