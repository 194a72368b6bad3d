"""logger.name takes any of transformers' integrations, or a list; each is configured to write under the run
directory (offline by default) and is checked before anything loads."""

from __future__ import annotations

import os

import pytest
from omegaconf import OmegaConf

from align_train import tracking
from align_train.config import LoggerConfig
from align_train.errors import ConfigError
from align_train.tracking import check_logger, configure_logger, report_to
from tests.conftest import compose_config


def logger(**changes):
    return OmegaConf.merge(OmegaConf.structured(LoggerConfig), changes)


@pytest.fixture
def every_package_installed(monkeypatch):
    module = tracking._integrations_module()
    monkeypatch.setattr(module, "get_available_reporting_integrations", lambda: list(module.INTEGRATION_TO_CALLBACK))


@pytest.fixture
def clean_env(monkeypatch):
    for key in list(os.environ):
        if key.startswith(("WANDB_", "MLFLOW_", "COMET_", "TENSORBOARD_", "TRACKIO_")):
            monkeypatch.delenv(key)


def test_names_a_list_and_aliases(every_package_installed):
    assert report_to(logger()) == []
    assert report_to(logger(name="tensorboard")) == ["tensorboard"]
    assert report_to(logger(name=["tensorboard", "wandb", "comet"])) == ["tensorboard", "wandb", "comet_ml"]
    assert report_to(logger(name=["wandb"], mode="disabled")) == [], "disabled: no tracker starts"
    for name in ("mlflow", "trackio", "comet", ["tensorboard", "mlflow"], "dvclive"):
        check_logger(logger(name=name))


@pytest.mark.parametrize("name,expected", [
    ("tensorbored", "tensorbored is not one of transformers' integrations"),
    (["none", "wandb"], "'none' cannot be combined"),
    ([], "expected none, an integration name"),
    ([""], "expected none, an integration name"),
])
def test_unknown_names_are_refused(name, expected, every_package_installed):
    with pytest.raises(ConfigError, match=expected):
        check_logger(logger(name=name))


def test_a_missing_package_names_the_extra(monkeypatch):
    module = tracking._integrations_module()
    monkeypatch.setattr(module, "get_available_reporting_integrations", lambda: ["wandb"])
    with pytest.raises(ConfigError, match=r"logger.name=mlflow needs its package.*align-train\[mlflow\]"):
        check_logger(logger(name=["wandb", "mlflow"]))


def test_the_trainer_reports_to_the_list(every_package_installed):
    from align_train.training_args import common_trainer_args

    cfg = compose_config("logger.name=[tensorboard,wandb]", "logger.project=proj")
    args = common_trainer_args(cfg, "out", 1)
    assert args["report_to"] == ["tensorboard", "wandb"] and args["project"] == "proj"


def test_each_tracker_writes_under_the_run_directory(tmp_path, every_package_installed, clean_env, monkeypatch):
    configure_logger(logger(name=["tensorboard", "mlflow", "comet", "wandb"], project="p", entity="team",
                            tags=["a"]), tmp_path)
    assert os.environ["TENSORBOARD_LOGGING_DIR"] == str(tmp_path / "tensorboard")
    assert os.environ["MLFLOW_TRACKING_URI"] == (tmp_path / "mlruns").resolve().as_uri()
    assert os.environ["MLFLOW_EXPERIMENT_NAME"] == "p" and os.environ["MLFLOW_TAGS"] == '{"a": "true"}'
    assert os.environ["COMET_START_ONLINE"] == "false" and os.environ["COMET_OFFLINE_DIRECTORY"] == str(tmp_path / "comet")
    assert os.environ["COMET_WORKSPACE"] == "team" and os.environ["WANDB_DIR"] == str(tmp_path)
    assert os.environ["WANDB_MODE"] == "offline"
    # Online, a tracking server the user set is kept.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    configure_logger(logger(name="mlflow", mode="online"), tmp_path)
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://mlflow.internal:5000"


def test_every_hinted_extra_exists():
    """The hint for a missing tracker package names an extra that pyproject.toml defines."""
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]
    assert set(tracking.REPORTED.values()) <= set(project["optional-dependencies"])
