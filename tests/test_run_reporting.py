"""One real run, reported everywhere at once (as a user runs it, from the command line, output not a terminal):
readable progress on stderr, TensorBoard and wandb-offline files that hold align-train's config, run_info.json and the
summary's before / after (read back from the event files), final/README.md, and the push of final/ with that card to
a local stand-in for the hub API; then align-eval publishes again."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from align_train.evaluation.evaluator import evaluation_records, headline
from align_train.run_dir import RunDir, read_metrics
from tests.hub_stand_in import HubStandIn

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
REPO = "user/tiny-dpo"


@pytest.fixture(scope="module")
def hub():
    with HubStandIn() as stand_in:
        yield stand_in


@pytest.fixture(scope="module")
def reported(tmp_path_factory, hub):
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    out = tmp_path_factory.mktemp("reported") / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0",
           "WANDB_MODE": "offline"}
    cmd = [sys.executable, "-m", "align_train", "recipe=tiny/dpo", "train.max_steps=3", "train.logging_steps=1",
           "train.save_steps=3", "data.max_eval_rows=8", "logger.name=[tensorboard,wandb]", "logger.project=tests",
           "hub.push=true", f"hub.repo_id={REPO}", "hub.push_checkpoints=true", f"output_dir={out}"]
    done = subprocess.run(cmd, cwd=out.parent, env=env, capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    return RunDir(out), done


def test_progress_lines_are_compact_and_plain(reported):
    _, done = reported
    err = done.stderr
    assert "\r" not in err, "no bar redraws when stderr is a file"
    steps = re.findall(r"^\[align-train\] step (\d)/3 \((\d+)%\).*?  loss \S+  acc \S+  margin \S+  grad \S+  lr \S+$",
                       err, re.M)
    assert [s for s, _ in steps] == ["1", "2", "3"], err[-2000:]
    assert re.search(r"^\[align-train\] step 2/3 \(67%\), [\d.]+ (s/step|step/s), ETA \d+s ", err, re.M)
    assert "{'loss'" not in err and "{'loss'" not in done.stdout, "no raw dicts"
    assert "Setting accelerator to CPU" not in err + done.stdout
    assert "Running in WANDB offline mode" not in err + done.stdout
    assert "held-out eval at step 3: loss" in err


def test_tensorboard_holds_the_config_run_info_and_summary(reported):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, _ = reported
    events = EventAccumulator(str(run.file("tensorboard")), size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()

    def text(tag):
        return events.Tensors(f"{tag}/text_summary")[-1].tensor_proto.string_val[0].decode()

    config = yaml.safe_load(text("align_train/config").replace("\n    ", "\n").strip())
    assert config["objective"]["name"] == "dpo" and config["hub"]["repo_id"] == REPO
    assert config["train"]["max_steps"] == 3
    run_info = json.loads(text("align_train/run_info"))
    assert run_info == json.loads(run.run_info.read_text())
    summary = json.loads(run.summary.read_text())
    table = text("align_train/summary")
    for key, value in summary["after"].items():
        before = summary["before"].get(key)
        assert f"| {key} | {'-' if before is None else f'{before:.4f}'} | {value:.4f} |" in table
    records = {r["step"]: headline(r) for r in evaluation_records(run.eval_dir)}
    scalars = {e.step: e.value for e in events.Scalars("align_train/eval/preference_accuracy")}
    assert scalars == pytest.approx({step: r["preference_accuracy"] for step, r in records.items()})
    logged = [e.step for e in events.Scalars("train/loss")]
    assert logged == [1, 2, 3], "the trainer's metrics through transformers' integration"


def wandb_records(path: Path):
    """The records of a wandb transaction log (.wandb: LevelDB-style log blocks of protobuf records)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, _ = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B" and magic == 0xBEE1
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (2, 3):  # first / middle piece of a record spanning blocks
            pending = (pending if kind == 3 else b"") + chunk
            continue
        record = wandb_internal_pb2.Record()
        record.ParseFromString(pending + chunk if kind == 4 else chunk)
        pending = b""
        yield record


def test_wandb_offline_files_hold_the_config_run_info_and_summary(reported):
    run, _ = reported
    (log,) = run.file("wandb").glob("offline-run-*/run-*.wandb")
    config, summary = {}, {}
    for record in wandb_records(log):
        kind = record.WhichOneof("record_type")
        if kind == "config":
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "summary":
            summary.update({item.key or "/".join(item.nested_key): item.value_json for item in record.summary.update})
    assert config["align_train"]["objective"]["beta"] == 0.1 and config["align_train"]["run_name"] == "tiny-dpo"
    assert config["align_train_run_info"]["argv"][1:] == json.loads(run.run_info.read_text())["argv"][1:]
    expected = json.loads(run.summary.read_text())
    for side in ("before", "after"):
        for key, value in expected[side].items():
            assert json.loads(summary[f"align_train/{side}/{key}"]) == pytest.approx(value)
    (table,) = log.parent.glob("files/media/table/align_train/summary_*.table.json")
    rows = json.loads(table.read_text())
    assert rows["columns"] == ["metric", "before", "after"]
    assert {r[0]: r[2] for r in rows["data"]} == pytest.approx(expected["after"])


def test_final_has_a_model_card_with_the_evaluation(reported):
    run, _ = reported
    text = (run.final / "README.md").read_text()
    meta = yaml.safe_load(re.match(r"^---\n(.*?)\n---\n", text, re.S).group(1))
    summary = json.loads(run.summary.read_text())
    assert meta["library_name"] == "transformers" and "dpo" in meta["tags"]
    after = {m["type"]: m["value"] for r in meta["model-index"][0]["results"] for m in r["metrics"]
             if m["name"].endswith("(after training)")}
    assert after == pytest.approx(summary["after"], abs=1e-6)
    assert "python -m align_train recipe=tiny/dpo train.max_steps=3" in text and f"hub.repo_id={REPO}" in text
    assert f"Trainable parameters: {summary['parameters']['trainable']:,} of" in text
    assert run.file("README.md").read_text() == text, "the run root's card is the same, not TRL's generic one"
    steps = [r["step"] for r in read_metrics(run.metrics) if "loss" in r]
    assert steps == [1, 2, 3]


def test_the_push_uploaded_final_and_its_card(reported, hub):
    run, done = reported
    files = hub.files(REPO)
    assert files["README.md"] == (run.final / "README.md").read_bytes()
    assert files["model.safetensors"] == (run.final / "model.safetensors").read_bytes()
    assert "checkpoints/checkpoint-3/model.safetensors" in files, "hub.push_checkpoints"
    assert hub.repos[REPO]["private"], "private unless hub.private=false"
    assert hub.commits[0]["summary"] == "align-train: tiny-dpo (dpo + full), step 3"
    assert hub.validated and all(not e for e in map(__import__("tests.hub_stand_in").hub_stand_in.card_errors,
                                                     hub.validated))
    assert f"[align-train] hub: pushed: {hub.endpoint}/{REPO}/commit/" in done.stderr


def test_align_eval_publishes_the_card_again(reported, hub, monkeypatch, capsys):
    """A recorded hub.push pushes after align-eval scores; --push REPO_ID pushes to another repository."""
    from huggingface_hub import constants

    from align_train.cli.evaluate import main

    run, _ = reported
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    commits = len(hub.commits)
    main([str(run.root)])
    assert len(hub.commits) == commits + 2, "final/ and the checkpoint again, to the recorded repository"
    assert f"{run.root}: scoring with the run's own suites: preference, perplexity" in capsys.readouterr().err, \
        "align-eval says which suites it scores with"
    main([str(run.root), "--push", "user/other"])
    assert hub.files("user/other")["README.md"] == (run.final / "README.md").read_bytes()
    hub.refuse_commits_with = 403
    try:
        with pytest.raises(SystemExit):
            main([str(run.root), "--push", "user/third"])
    finally:
        hub.refuse_commits_with = None
    err = capsys.readouterr().err
    assert "uploading" in err and "user/third failed (HTTP 403)" in err and f"align-eval {run.root} --push" in err


def test_align_eval_scores_a_run_trained_without_evaluation_with_the_default_suites(reported, tmp_path, capsys):
    """The default run, trained with eval=none: align-eval RUN picks eval=default, says so, and scores the start and
    the final model with it (the hook's own numbers, which the reported run computed with eval=default)."""
    from omegaconf import OmegaConf

    from align_train.cli.evaluate import main

    run, _ = reported
    copy = RunDir(tmp_path / "run")
    shutil.copytree(run.root, copy.root)
    shutil.rmtree(copy.eval_dir)
    cfg = OmegaConf.load(copy.config)
    cfg.eval, cfg.hub.push = OmegaConf.create({"enabled": False}), False
    OmegaConf.save(cfg, copy.config)
    main([str(copy.root)])
    err = capsys.readouterr().err
    assert f"{copy.root}: its config enables no evaluation suite; scoring with eval=default: preference, perplexity" \
        in err
    records = {r["step"]: headline(r) for r in evaluation_records(copy.eval_dir)}
    hooks = {r["step"]: headline(r) for r in evaluation_records(run.eval_dir)}
    assert sorted(records) == [0, 3]
    for step in (0, 3):
        for key in ("preference_accuracy", "perplexity"):
            assert records[step][key] == pytest.approx(hooks[step][key], rel=1e-4), (step, key)
