"""The bad-input and fault matrix: config values, data files, run directories, concurrency and evaluation
inputs. Every case asserts the named error (key, file, row) and that nothing on disk was lost or changed;
most fail before a model loads. Kill tests SIGKILL a run at many points (inside saves and rotation included)
and resume: each ends bit-identical to the uninterrupted run or with a named refusal, never a silent restart.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from align_train.errors import AlignTrainError, ConfigError, DataError
from align_train.run_dir import (
    COMPLETE_MARKER,
    LOCK_FILE,
    checkpoint_problem,
    checkpoints,
    plan_start,
    read_metrics,
)
from tests.conftest import FAST, run_recipe



def tree_digest(root: Path) -> dict[str, str]:
    """Every file under root (names and contents): what "byte-identical" compares."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if anything tries to load a model: the case must be refused before that."""
    import align_train.train as train

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was refused")

    monkeypatch.setattr(train, "load_model", refuse)


# --------------------------------------------------------------------------- config values

CONFIG_CASES = [
    (["train.learning_rate=0"], "train.learning_rate"),
    (["train.learning_rate=-1e-4"], "train.learning_rate"),
    (["train.learning_rate=nan"], "train.learning_rate"),
    (["train.learning_rate=inf"], "train.learning_rate"),
    (["train.lr_scheduler=cosinus"], "train.lr_scheduler"),
    (["train.optim=adamw_torchh"], "train.optim"),
    (["objective.beta=nan"], "objective.beta"),
    (["objective.beta=-inf"], "objective.beta"),
    (["objective.beta=-0.1"], "objective.beta"),
    (["objective.label_smoothing=0.7"], "objective.label_smoothing"),
    (["objective.ld_alpha=1.5"], "objective.ld_alpha"),
    (["objective.f_alpha_divergence_coef=0"], "objective.f_alpha_divergence_coef"),
    (["objective.ref_model_mixup_alpha=2"], "objective.ref_model_mixup_alpha"),
    (["data.train.tiny_preference.weight=0"], "data.train.tiny_preference.weight"),
    (["data.train.tiny_preference.weight=nan"], "data.train.tiny_preference.weight"),
    (["data.train.tiny_preference.weight=inf"], "data.train.tiny_preference.weight"),
    (["data.train.tiny_preference.weight=1e-9"], "data.train.tiny_preference.weight"),
    (["data.max_eval_rows=-1"], "data.max_eval_rows"),
    (["data.eval_fraction=1.0"], "data.eval_fraction"),
    (["data.eval_fraction=-0.1"], "data.eval_fraction"),
    (["data.seed=-1"], "data.seed"),
    (["train.max_steps=0"], "train.max_steps"),
    (["train.num_epochs=0"], "train.num_epochs"),
    (["train.global_batch_size=0"], "train.global_batch_size"),
    (["train.per_device_batch_size=-2"], "train.per_device_batch_size"),
    (["train.eval_batch_size=0"], "train.eval_batch_size"),
    (["train.warmup_ratio=1.0"], "train.warmup_ratio"),
    (["train.weight_decay=-0.01"], "train.weight_decay"),
    (["train.max_grad_norm=nan"], "train.max_grad_norm"),
    (["train.logging_steps=0"], "train.logging_steps"),
    (["train.save_steps=-5"], "train.save_steps"),
    (["train.save_total_limit=0"], "train.save_total_limit"),
    (["train.eval_steps=-1"], "train.eval_steps"),
    (["train.dataloader_num_workers=-1"], "train.dataloader_num_workers"),
    (["train.seed=-3"], "train.seed"),
    (["model.max_length=0"], "model.max_length"),
    (["model.init=scratch"], "model.init"),
    (["model.dtype=float8"], "model.dtype"),
    (["recipe=tiny/kto", "objective.desirable_weight=0"], "objective.desirable_weight"),
    (["recipe=tiny/kto", "objective.undesirable_weight=nan"], "objective.undesirable_weight"),
    (["recipe=tiny/bco", "objective.udm.heldout_fraction=1.0"], "objective.udm.heldout_fraction"),
    (["recipe=tiny/bco", "objective.udm.regularization=0"], "objective.udm.regularization"),
    (["recipe=tiny/bco", "objective.udm.min_ratio=-1"], "objective.udm.min_ratio"),
    (["recipe=tiny/bco", "objective.udm.min_prompts=1"], "objective.udm.min_prompts"),
    (["tuning=lora", "tuning.alpha=0"], "tuning.alpha"),
    (["tuning=lora", "tuning.dropout=1.0"], "tuning.dropout"),
    (["recipe=tiny/nest", "tuning.threshold=0"], "tuning.threshold"),
    (["recipe=tiny/nest", "tuning.clusters=0"], "tuning.clusters"),
    (["recipe=tiny/nest", "tuning.probe_c=inf"], "tuning.probe_c"),
    (["eval=tiny", "eval.refusal.generation.temperature=0"], "eval.refusal.generation.temperature"),
    (["eval=tiny", "eval.refusal.generation.top_p=1.5"], "eval.refusal.generation.top_p"),
    (["eval=tiny", "eval.refusal.prompts.max_prompts=0"], "eval.refusal.prompts.max_prompts"),
    (["eval=tiny", "eval.latent_separation.lam=2"], "eval.latent_separation.lam"),
    (["eval=tiny", "eval.samples=-1"], "eval.samples"),
    (["+objective.bogus_key=1"], "objective.bogus_key"),
    (["tuning=lora", "+tuning.use_qalora=true"], "tuning.use_qalora"),
    (["+train.bogus=1"], "train.bogus"),
    (["+data.train.tiny_preference.bogus=1"], "data.train.tiny_preference.bogus"),
    (["+eval.refusal.judge.bogus=1"], "eval.refusal.judge.bogus"),
    (["+logger.bogus=1"], "logger.bogus"),
    (["+model.bogus=1"], "model.bogus"),
    (["run_name=../escape"], "run_name"),
    (["run_name='a b'"], "run_name"),
    (["resume=42"], "resume"),
]


@pytest.mark.parametrize("overrides,key", CONFIG_CASES, ids=[" ".join(o) for o, _ in CONFIG_CASES])
def test_bad_config_value_is_refused_before_anything_loads(overrides, key, tmp_path, no_model_load):
    out = tmp_path / "run"
    with pytest.raises(AlignTrainError) as err:
        run_recipe(out, *FAST, *overrides)
    assert key in str(err.value), str(err.value)
    assert not out.exists(), "a refused start created its output directory"


# --------------------------------------------------------------------------- data files

GOOD = '{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}\n'

DATA_CASES = {
    "latin1_line": (lambda: (GOOD * 3 + '{"prompt": "Caf\xe9", "chosen": "a", "rejected": "b"}\n').encode("latin-1"),
                    ".jsonl", ["line 4", "not UTF-8"]),
    "stray_byte": (lambda: GOOD.encode() + b'{"prompt": "x\xff", "chosen": "a", "rejected": "b"}\n', ".jsonl",
                   ["line 2", "not UTF-8"]),
    "truncated_json": (lambda: (GOOD * 2 + '{"prompt": "x", "chosen": ').encode(), ".jsonl", ["line 3", "not valid JSON"]),
    "json_array_line": (lambda: (GOOD + '[1, 2]\n').encode(), ".jsonl", ["line 2", "expected a JSON object"]),
    "empty_chosen": (lambda: (GOOD + '{"prompt": "x", "chosen": "", "rejected": "b"}\n').encode(), ".jsonl",
                     ["line 2", "'chosen' is empty"]),
    "identical_pair": (lambda: (GOOD + '{"prompt": "x", "chosen": "b", "rejected": "b"}\n').encode(), ".jsonl",
                       ["line 2", "identical"]),
    "missing_field": (lambda: (GOOD + '{"prompt": "x", "chosen": "b"}\n').encode(), ".jsonl", ["line 2", "rejected"]),
    "mixed_kinds": (lambda: (GOOD + '{"prompt": [{"role": "user", "content": "x"}], "chosen": [{"role": "assistant", '
                                    '"content": "a"}], "rejected": [{"role": "assistant", "content": "b"}]}\n').encode(),
                    ".jsonl", ["line 2", "conversational"]),
    "bad_role": (lambda: (GOOD.replace('"Hi"', '[{"role": "human", "content": "x"}]')
                          .replace('"Hello!"', '[{"role": "assistant", "content": "a"}]')
                          .replace('"Go away."', '[{"role": "assistant", "content": "b"}]')).encode(), ".jsonl",
                 ["line 1", "role"]),
    "csv_latin1": (lambda: "prompt,chosen,rejected\nHi,Hello,Go\nCaf\xe9,a,b\n".encode("latin-1"), ".csv",
                   ["line 3", "not UTF-8"]),
    "json_latin1": (lambda: '[{"prompt": "Caf\xe9", "chosen": "a", "rejected": "b"}]'.encode("latin-1"), ".json",
                    ["line 1", "not UTF-8"]),
    "json_not_array": (lambda: b'{"prompt": "x"}', ".json", ["expected a JSON array"]),
    "empty_file": (lambda: b"", ".jsonl", ["has no rows"]),
    "unknown_columns": (lambda: b'{"question": "x", "answer": "y"}\n', ".jsonl", ["line 1", "missing 'prompt'"]),
    "wrong_extension": (lambda: GOOD.encode(), ".txt", ["unsupported file type"]),
}


@pytest.mark.parametrize("name", sorted(DATA_CASES))
def test_bad_data_file_is_named_with_its_line_and_is_left_as_it_was(name, tmp_path, no_model_load):
    content, suffix, fragments = DATA_CASES[name]
    path = tmp_path / f"data{suffix}"
    path.write_bytes(content())
    before = tree_digest(tmp_path)
    with pytest.raises((DataError, ConfigError)) as err:
        run_recipe(tmp_path / "run", f"data.train.tiny_preference.path={path}", *FAST)
    message = str(err.value)
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert tree_digest(tmp_path) == before


def test_skip_invalid_rows_also_skips_lines_that_are_not_json_or_not_utf8(tmp_path):
    from align_train.config import SourceConfig
    from align_train.data.sources import read_source

    path = tmp_path / "d.jsonl"
    path.write_bytes(GOOD.encode() * 3 + b'{"prompt": "x\xff"}\n' + b"{not json\n" + GOOD.encode())
    src = read_source("data.train.x", SourceConfig(path=str(path), format="preference"), skip_invalid_rows=True)
    assert len(src.rows) == 4 and len(src.skipped) == 2
    assert "line 4" in src.skipped[0] and "line 5" in src.skipped[1]


def test_missing_data_path_and_empty_directory_are_named(tmp_path, no_model_load):
    with pytest.raises(DataError, match="does not exist"):
        run_recipe(tmp_path / "run", f"data.train.tiny_preference.path={tmp_path / 'nope.jsonl'}", *FAST)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no data files"):
        run_recipe(tmp_path / "run", f"data.train.tiny_preference.path={tmp_path / 'empty'}", *FAST)
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- run directories


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A short run with two checkpoints (the fixture's copy is never modified; tests copy it)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    run_recipe(out, *SFT4)
    return out


def copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


SFT4 = ["recipe=tiny/sft", "eval=none", "train.max_steps=4", "train.save_steps=2",
        "data.max_eval_rows=8"]


def test_a_fresh_start_on_an_existing_run_changes_nothing(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    before = tree_digest(run)
    with pytest.raises(ConfigError, match="resume=true"):
        run_recipe(run, *SFT4, "train.learning_rate=1e-3")
    assert tree_digest(run) == before, "the refused start rewrote the run's record"


def test_a_directory_that_is_not_a_run_is_refused_and_left_alone(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("important")
    before = tree_digest(tmp_path)
    with pytest.raises(ConfigError, match="not an align-train run directory"):
        run_recipe(tmp_path / "mine", *SFT4)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        run_recipe(tmp_path / "file", *SFT4)
    assert tree_digest(tmp_path) == {**before, "file": hashlib.sha256(b"x").hexdigest()}


def test_an_unwritable_output_dir_is_named(tmp_path, monkeypatch):
    import align_train.run_dir as run_dir

    real_open = os.open

    def read_only(path, flags, *args):
        if str(path).endswith(LOCK_FILE):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(run_dir.os, "open", read_only)
    with pytest.raises(ConfigError, match="not writable"):
        run_recipe(tmp_path / "ro", *SFT4)
    assert not (tmp_path / "ro").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="permissions do not bind root")
def test_a_read_only_output_dir_is_named_for_real(tmp_path):
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    try:
        with pytest.raises(ConfigError, match="not writable"):
            run_recipe(tmp_path / "ro", *SFT4)
    finally:
        (tmp_path / "ro").chmod(0o755)


HOLD = """
import sys, time
from pathlib import Path
from align_train.run_dir import RunLock
lock = RunLock(Path(sys.argv[1]))
Path(sys.argv[1]).mkdir(parents=True, exist_ok=True)
lock.acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_a_directory_owned_by_a_live_run_is_refused_at_once(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = tree_digest(tmp_path / "run")
        started = time.time()
        for resume in ("false", "true"):
            with pytest.raises(ConfigError, match=rf"in use by another run \(pid {holder.pid}"):
                run_recipe(tmp_path / "run", *SFT4, f"resume={resume}")
        assert time.time() - started < 10, "the refusal waited for something"
        assert tree_digest(tmp_path / "run") == before
    finally:
        holder.kill()
        holder.wait()
    # The holder died without releasing: its lock file is stale, and the next run takes the directory over.
    assert (tmp_path / "run" / LOCK_FILE).is_file()
    result = run_recipe(tmp_path / "run", *SFT4, "resume=true")
    assert result.steps == 4 and not (tmp_path / "run" / LOCK_FILE).exists()


def test_two_runs_launched_at_once_on_one_directory(tmp_path):
    """Both processes start together: one trains, the other fails at once naming the owner; nothing interleaves."""
    out = tmp_path / "shared"
    cmd = [sys.executable, "-m", "align_train", *SFT4, f"output_dir={out}"]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    codes = sorted(code for _, _, code in results)
    assert codes == [0, 2], [err[-1500:] for _, err, _ in results]
    loser = next(err for _, err, code in results if code == 2)
    assert "in use by another run" in loser or "already holds a run" in loser, loser[-1500:]
    steps = [r["step"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    assert steps == sorted(set(steps)), "metrics of two runs interleaved"


def test_default_run_directories_never_collide():
    from align_train.composition import new_run_stamp

    stamps = {new_run_stamp() for _ in range(200)}
    assert len(stamps) == 200


def test_resume_with_only_incomplete_checkpoints_refuses_a_silent_restart(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    for checkpoint in run.glob("checkpoint-*"):
        (checkpoint / COMPLETE_MARKER).unlink()
    before = tree_digest(run)
    with pytest.raises(ConfigError, match="none is complete.*resume=restart"):
        run_recipe(run, *SFT4, "resume=true")
    assert tree_digest(run) == before
    result = run_recipe(run, *SFT4, "resume=restart")
    assert result.resumed_from is None and result.steps == 4
    assert [p.name for p in checkpoints(run)] == ["checkpoint-2", "checkpoint-4"]


def test_restart_is_refused_while_complete_checkpoints_exist(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    before = tree_digest(run)
    with pytest.raises(ConfigError, match="resume=restart.*complete checkpoints"):
        run_recipe(run, *SFT4, "resume=restart")
    assert tree_digest(run) == before


def test_resume_from_a_path_that_is_no_checkpoint_is_named(tmp_path):
    with pytest.raises(ConfigError, match="cannot be resumed from"):
        run_recipe(tmp_path / "run", *SFT4, f"resume={tmp_path}")


@pytest.mark.parametrize("damage", ["truncate_weights", "truncate_optimizer", "drop_trainer_state"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(damage, finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path / "run")
    latest = run / "checkpoint-4"
    if damage == "truncate_weights":
        weights = latest / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "truncate_optimizer":
        optimizer = latest / "optimizer.pt"
        optimizer.write_bytes(optimizer.read_bytes()[:100])
    else:
        (latest / "trainer_state.json").unlink()
    assert checkpoint_problem(latest) is not None
    (run / "final").rename(run / "final-before")
    (run / "summary.json").unlink()
    result = run_recipe(run, *SFT4, "resume=true")
    err = capsys.readouterr().err
    assert "checkpoint-4 cannot be resumed from" in err and result.resumed_from.endswith("checkpoint-2")
    expected, resumed = load_file(run / "final-before" / "model.safetensors"), load_file(run / "final" / "model.safetensors")
    assert all(torch.equal(expected[k], resumed[k]) for k in expected)


def test_a_full_disk_is_named_and_leaves_the_checkpoint_unmarked(tmp_path, monkeypatch):
    import errno

    from transformers import Trainer

    real = Trainer._save_optimizer_and_scheduler

    def full(self, output_dir):
        if self.state.global_step == 4:
            raise OSError(errno.ENOSPC, "No space left on device", os.path.join(output_dir, "optimizer.pt"))
        return real(self, output_dir)

    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", full)
    with pytest.raises(AlignTrainError, match=r"no space left on device while writing .*checkpoint-4/optimizer.pt"):
        run_recipe(tmp_path / "run", *SFT4)
    assert [p.name for p in checkpoints(tmp_path / "run")] == ["checkpoint-2"]
    assert not (tmp_path / "run" / "checkpoint-4" / COMPLETE_MARKER).exists()
    assert not (tmp_path / "run" / LOCK_FILE).exists(), "the lock is released when the run fails"


def test_resuming_with_changed_settings_keeps_each_segment_and_marks_the_restart(tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    run_recipe(run, *SFT4, "train.logging_steps=1")
    shutil.rmtree(run / "checkpoint-4")
    shutil.rmtree(run / "final")
    (run / "summary.json").unlink()
    capsys.readouterr()
    run_recipe(run, *SFT4, "train.logging_steps=1", "resume=true", "train.learning_rate=3e-5")
    err = capsys.readouterr().err
    assert "train.learning_rate: 0.0003 -> 3e-05" in err
    first = (run / "segments" / "0" / "config.yaml").read_text()
    second = (run / "segments" / "1" / "config.yaml").read_text()
    assert "learning_rate: 0.0003" in first and "learning_rate: 3.0e-05" in second
    assert (run / "config.yaml").read_text() == second
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    marker = [r for r in lines if r.get("event") == "segment"]
    assert marker and marker[0]["segment"] == 1 and marker[0]["step"] == 2
    raw_steps = [r["step"] for r in lines if "loss" in r]
    kept = [r["step"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r]
    assert len(raw_steps) > len(set(raw_steps)), "the resume logged steps 3-4 again"
    assert kept == sorted(set(kept)), "readers keep one (the latest) value per step"


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_written_files_honour_the_umask(umask, tmp_path):
    previous = os.umask(umask)
    try:
        run_recipe(tmp_path / "run", "recipe=tiny/sft", "train.max_steps=2", "train.save_steps=2",
                   "eval=none", "data.max_eval_rows=8")
    finally:
        os.umask(previous)
    expected = 0o666 & ~umask
    for name in ("final/model.safetensors", "checkpoint-2/model.safetensors", "checkpoint-2/optimizer.pt",
                 "config.yaml", "metrics.jsonl"):
        assert (tmp_path / "run" / name).stat().st_mode & 0o777 == expected, name


def test_rotation_keeps_the_last_complete_checkpoint_until_a_newer_one_is_marked(tmp_path):
    from align_train.run_dir import rotate

    for step in (1, 2, 3):
        path = tmp_path / f"checkpoint-{step}"
        path.mkdir()
        (path / "trainer_state.json").write_text("{}")
        (path / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    (tmp_path / "checkpoint-1" / COMPLETE_MARKER).write_text("{}")
    (tmp_path / "checkpoint-2" / COMPLETE_MARKER).write_text("{}")
    rotate(tmp_path, keep=1)  # checkpoint-3 is not marked: 2 stays
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    (tmp_path / "checkpoint-3" / COMPLETE_MARKER).write_text("{}")
    rotate(tmp_path, keep=1)
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-3"]


def test_multirun_into_an_existing_run_is_refused(finished_run, tmp_path, capsys, monkeypatch):
    from align_train.cli import train as cli

    run = copy_run(finished_run, tmp_path / "run")
    before = tree_digest(run)
    monkeypatch.setattr(sys, "argv", ["align-train", "--multirun", *SFT4, "objective.packing=false,true",
                                      f"output_dir={run}"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 2 and "holds a run" in capsys.readouterr().err
    assert tree_digest(run) == before


def test_plan_start_reads_and_never_writes(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    before = tree_digest(run)
    assert plan_start(run, True).resume_from.endswith("checkpoint-4")
    for resume in (False, "restart"):
        with pytest.raises(ConfigError):
            plan_start(run, resume)
    assert tree_digest(run) == before and not (run / LOCK_FILE).exists()


# --------------------------------------------------------------------------- evaluation inputs


def align_eval(args: list[str], capsys) -> str:
    """align-eval in this process; it must exit with code 2; returns what it printed to stderr."""
    from align_train.cli.evaluate import main

    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    return capsys.readouterr().err


def test_align_eval_judge_reads_csv_cells_of_any_size(tmp_path):
    from align_train.evaluation.judges import judge_file

    path = tmp_path / "big.csv"
    long = "Sure, here is how. " * 20_000  # ~380 KiB in one cell
    path.write_text(f"prompt,completion\nHow?,\"{long}\"\nWhy?,I'm sorry but I can't help with that.\n")
    out = judge_file(path)
    text = out.read_text()
    assert out.is_file() and text.count("\n") == 3 and "true" in text and "false" in text


@pytest.mark.parametrize("content,suffix,fragment", [
    ("prompt,completion\nx,Caf\xe9\n".encode("latin-1"), ".csv", "line 2"),
    (b'{"completion": "ok"}\n{"completion": "x\xff"}\n', ".jsonl", "line 2"),
    (b'{"completion": "ok"}\n{broken\n', ".jsonl", "line 2"),
    (b'{"text": "ok"}\n', ".jsonl", "no column 'completion'"),
])
def test_align_eval_judge_names_the_file_and_line_of_bad_input(content, suffix, fragment, tmp_path, capsys):
    path = tmp_path / f"responses{suffix}"
    path.write_bytes(content)
    err = align_eval(["judge", str(path)], capsys)
    assert str(path) in err and fragment in err, err
    assert path.read_bytes() == content and sorted(p.name for p in tmp_path.iterdir()) == [path.name]


@pytest.mark.parametrize("kind", ["file", "missing", "folder"])
def test_align_eval_says_what_it_expected(kind, tmp_path, capsys):
    target = {"file": tmp_path / "x.txt", "missing": tmp_path / "nope" / "run", "folder": tmp_path / "folder"}[kind]
    if kind == "file":
        target.write_text("x")
    if kind == "folder":
        target.mkdir()
        (target / "notes.txt").write_text("x")
    err = align_eval([str(target)], capsys)
    assert "expected a run directory (with config.yaml), a model or checkpoint directory" in err
    assert "huggingface" not in err.lower()


# --------------------------------------------------------------------------- kill tests

KILL_STEPS = ["recipe=tiny/sft", "eval=none", "train.max_steps=5", "train.save_steps=1", "train.save_total_limit=2",
              "data.max_eval_rows=8"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "run"
    run_recipe(out, *KILL_STEPS)
    return load_file(out / "final" / "model.safetensors")


def _killed_child(out: Path, point: str | None) -> None:
    os.environ["ALIGN_TRAIN_KILL_AT"] = point or ""
    sys.argv = ["kill_probe"]
    import tests.kill_probe as probe

    probe.POINT, _, probe.COUNT = (point or "").partition(":")
    if point:
        probe.install()
    run_recipe(out, *KILL_STEPS)


def killed_run(out: Path, point: str | None = None, delay: float | None = None) -> None:
    """The recipe in a forked process (no second start-up) SIGKILLed at a named point, or after a delay once
    training started."""
    import multiprocessing

    child = multiprocessing.get_context("fork").Process(target=_killed_child, args=(out, point))
    child.start()
    if delay is not None:
        deadline = time.time() + 120
        while not (out / "metrics.jsonl").is_file() and child.is_alive() and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(delay)
        if child.is_alive():
            os.kill(child.pid, signal.SIGKILL)
    child.join(timeout=300)
    if point:
        assert child.exitcode == -signal.SIGKILL, child.exitcode


def resume_after_kill(out: Path, uninterrupted) -> str:
    """Resume; the run ends bit-identical to the uninterrupted one, or is refused by name and then restarted."""
    complete_before = checkpoints(out) if out.exists() else []
    try:
        result = run_recipe(out, *KILL_STEPS, "resume=true")
        outcome = "resumed"
    except ConfigError as err:
        assert "none is complete" in str(err) and "resume=restart" in str(err), str(err)
        assert not complete_before
        result = run_recipe(out, *KILL_STEPS, "resume=restart")
        outcome = "refused, then restarted"
    if complete_before:  # never a silent restart: the newest intact checkpoint is where it continued
        assert result.resumed_from == str(complete_before[-1]), (result.resumed_from, complete_before)
    final = load_file(out / "final" / "model.safetensors")
    assert all(torch.equal(uninterrupted[k], final[k]) for k in uninterrupted), "resumed run differs"
    assert not (out / LOCK_FILE).exists()
    return outcome


@pytest.mark.parametrize("point", ["step:3", "weights_saved:2", "trainer_state:3", "marker:4", "rotate:1",
                                   "rotate:2", "final:1"])
def test_sigkill_at_a_named_point_then_resume(point, tmp_path, uninterrupted):
    out = tmp_path / "run"
    killed_run(out, point=point)
    resume_after_kill(out, uninterrupted)


@pytest.mark.parametrize("trial", range(6))
def test_sigkill_at_a_random_moment_then_resume(trial, tmp_path, uninterrupted):
    out = tmp_path / "run"
    killed_run(out, delay=random.Random(trial).uniform(0.0, 3.0))
    resume_after_kill(out, uninterrupted)
