"""Pipelines: stages composed and checked up front, chained by their final weights, completed stages skipped."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from align_train.errors import ConfigError
from align_train.paths import DATA_DIR
from align_train.pipeline import compose_stages, run_pipeline
from tests.conftest import compose_config

BASE = load_file(str(DATA_DIR / "tiny-llama" / "model.safetensors"))
# Short stages; the command-line overrides apply to every stage and win over the stage's own.
QUICK = ["recipe=tiny/msm_pipeline", "train.max_steps=2", "data.max_eval_rows=8",
         "eval=none"]


def pipeline_config(tmp_path, *extra):
    overrides = [*QUICK, *extra]
    return compose_config(*overrides, output_dir=tmp_path), overrides


def weights(stage_dir):
    return load_file(str(stage_dir / "final" / "model.safetensors"))


@pytest.mark.slow
def test_stage_two_starts_from_stage_one_and_rerun_skips_it(tmp_path):
    cfg, overrides = pipeline_config(tmp_path)
    # Stage 2 trains only the MLP down-projections: every other weight it saves is the weight it started from.
    cfg.stages[1].overrides += ["tuning=freeze", "tuning.trainable=[down_proj]"]
    results = run_pipeline(cfg, overrides)
    first, second = tmp_path / "stages" / "0-midtrain", tmp_path / "stages" / "1-sft"
    assert [r.status for r in results] == ["ran", "ran"]
    w1, w2 = weights(first), weights(second)
    frozen = [k for k in w2 if "down_proj" not in k]
    assert frozen and all(torch.equal(w2[k], w1[k]) for k in frozen), "stage 2 did not start from stage 1's weights"
    assert any(not torch.equal(w1[k], BASE[k]) for k in frozen), "stage 1 trained"
    assert any(not torch.equal(w2[k], w1[k]) for k in w2 if "down_proj" in k), "stage 2 trained"
    stage2_cfg = (second / "config.yaml").read_text()
    assert f"name_or_path: {first / 'final'}" in stage2_cfg and "objective:\n  name: sft" in stage2_cfg
    assert json.loads((tmp_path / "pipeline.json").read_text())["stages"][1]["start_model"] == str(first / "final")

    # Stage 2 lost (as after a crash before it completed): the rerun skips stage 1 and redoes stage 2 from it.
    stamp = (first / "final" / "model.safetensors").stat().st_mtime_ns
    for path in sorted(second.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    second.rmdir()
    results = run_pipeline(cfg, overrides)
    assert [r.status for r in results] == ["skipped", "ran"]
    assert (first / "final" / "model.safetensors").stat().st_mtime_ns == stamp
    assert all(torch.equal(weights(second)[k], w1[k]) for k in frozen)
    # Everything complete: nothing runs.
    assert [r.status for r in run_pipeline(cfg, overrides)] == ["skipped", "skipped"]


def test_stage_overrides_compose_per_stage_and_command_line_wins(tmp_path):
    cfg, overrides = pipeline_config(tmp_path, "train.learning_rate=0.002")
    stages = compose_stages(cfg, overrides)
    (i0, _, mid), (i1, _, sft) = stages
    assert (mid.objective.name, sft.objective.name) == ("midtrain", "sft")
    assert set(mid.data.train) == {"spec_docs", "general"} and set(sft.data.train) == {"msm_sft"}
    assert mid.train.learning_rate == sft.train.learning_rate == 0.002  # the command line beats the stage
    assert sft.output_dir == str(tmp_path / "stages" / "1-sft") and list(sft.stages) == []
    cfg, overrides = pipeline_config(tmp_path, "stages.0.enabled=false")
    assert [s.name for _, s, _ in compose_stages(cfg, overrides)] == ["sft"]


@pytest.mark.parametrize("change, message", [
    (lambda c: c.stages[1].overrides.append("objective.beta=0.1"), "stages[1] ('sft')"),
    (lambda c: c.stages[0].overrides.append("tuning=lora"), "add tuning.save_merged=true"),
    (lambda c: c.stages[1].overrides.append("output_dir=/elsewhere"), "set by the pipeline itself"),
    (lambda c: setattr(c.stages[1], "name", "midtrain"), "used by more than one stage"),
    (lambda c: setattr(c.stages[0], "name", "a b"), "stages[0].name 'a b'"),
])
def test_bad_stage_fails_before_anything_trains(tmp_path, change, message):
    cfg, overrides = pipeline_config(tmp_path)
    change(cfg)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        run_pipeline(cfg, overrides)
    assert not (tmp_path / "stages").exists()


def test_every_stage_of_the_shipped_pipeline_composes_and_validates(tmp_path):
    cfg, overrides = pipeline_config(tmp_path)
    assert [s.name for _, s, _ in compose_stages(cfg, ["recipe=tiny/msm_pipeline"])] == ["midtrain", "sft"]


@pytest.mark.slow
def test_pipeline_from_the_command_line_runs_the_hook_after_each_stage(tmp_path):
    from tests.test_cli import align_train

    run_dir = tmp_path / "run"
    args = ["recipe=tiny/msm_pipeline", f"output_dir={run_dir}", "train.max_steps=1", "data.max_eval_rows=4",
            "eval.perplexity.max_examples=4"]
    out = align_train(*args, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "align-train pipeline: 2 stage(s)" in out.stdout and "1-sft" in out.stdout
    for stage in ("0-midtrain", "1-sft"):
        # The hook scored the stage's starting and final model on the probes (conf/eval/msm.yaml).
        steps = sorted(p.name for p in (run_dir / "stages" / stage / "eval").glob("step-*.json"))
        assert steps == ["step-0.json", "step-1.json"], (stage, steps)
        record = json.loads((run_dir / "stages" / stage / "eval" / "step-1.json").read_text())
        assert record["suites"]["preference"]["details"]["pairs"] == 32
    assert "name_or_path: " + str(run_dir / "stages" / "0-midtrain" / "final") in \
        (run_dir / "stages" / "1-sft" / "config.yaml").read_text()
    again = align_train(*args, cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.count("skipped") >= 2, again.stdout[-2000:]
