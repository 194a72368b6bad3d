"""The align-train command as users run it: a subprocess, Hydra overrides, sweeps, clean errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


from tests.conftest import FAST

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}


def align_train(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "align_train", *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300
    )


def test_cfg_job_prints_the_composed_config(tmp_path):
    out = align_train("recipe=tiny/sft", "tuning=lora", "tuning.r=8", "--cfg", "job", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "name: sft" in out.stdout and "r: 8" in out.stdout and "name: lora" in out.stdout


def test_run_from_another_directory_prints_a_summary(tmp_path):
    run_dir = tmp_path / "run"
    out = align_train("recipe=tiny/sft", f"output_dir={run_dir}", *FAST, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "align-train: tiny-sft  (sft + full)" in out.stdout
    assert "evaluation hook      step 0" in out.stdout and str(run_dir / "final") in out.stdout
    assert (run_dir / "eval" / "step-0.json").is_file(), "the tiny SFT recipe turns the hook on"
    assert (run_dir / "final" / "model.safetensors").is_file()
    assert (run_dir / ".hydra" / "overrides.yaml").is_file()


def test_default_run_directory_is_named_after_the_recipe(tmp_path):
    out = align_train("recipe=tiny/sft", *FAST, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    (run,) = (tmp_path / "runs" / "tiny-sft").iterdir()
    assert (run / "final" / "config.json").is_file() and (run / "metrics.jsonl").is_file()


def test_multirun_sweeps_into_numbered_directories(tmp_path):
    out = align_train(
        "--multirun", "recipe=tiny/dpo", "train.learning_rate=1e-3,2e-3", f"output_dir={tmp_path / 'sweep'}",
        *FAST, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    for job in ("0", "1"):
        assert (tmp_path / "sweep" / job / "final" / "model.safetensors").is_file()
    rates = [(tmp_path / "sweep" / job / "config.yaml").read_text() for job in ("0", "1")]
    assert "learning_rate: 0.001" in rates[0] and "learning_rate: 0.002" in rates[1]


def test_bad_config_fails_cleanly_before_loading_the_model(tmp_path):
    out = align_train("objective.loss_type=[sigmoid,nope]", "model.name_or_path=/nonexistent", cwd=tmp_path)
    assert out.returncode == 2
    assert "objective.loss_type[1] is 'nope'" in out.stderr and "Traceback" not in out.stderr
    assert "nonexistent" not in out.stderr


def test_bad_data_path_names_the_key_and_the_path(tmp_path):
    out = align_train("data.train.tiny_preference.path=./missing.jsonl", cwd=tmp_path)
    assert out.returncode == 2
    assert "data.train.tiny_preference.path" in out.stderr and "missing.jsonl" in out.stderr


# Multi-process launches (torchrun, accelerate, DeepSpeed, SLURM) are tested in test_launch.py.
