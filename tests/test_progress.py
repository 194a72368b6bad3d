"""Progress a person can read: one compact line per logging step (step / total, rate, ETA off a terminal; the key
metrics, lr), a bar on a terminal, hub downloads reported (as plain lines off a terminal), and library noise kept out."""

from __future__ import annotations

import io
import logging
import os
from types import SimpleNamespace

import pytest

from align_train import console
from align_train.tracking import ConsoleProgress, step_line

DPO_LOG = {"loss": 0.3386, "grad_norm": 2.666, "learning_rate": 6.545e-05, "entropy": 0.37, "num_tokens": 7925.0,
           "logits/chosen": -1.3, "mean_token_accuracy": 0.92, "rewards/chosen": 0.0026, "rewards/rejected": -1.41,
           "rewards/accuracies": 0.8125, "rewards/margins": 1.413, "logps/chosen": -9.2, "epoch": 0.12}
SFT_LOG = {"loss": 1.25, "grad_norm": 3.0, "learning_rate": 2e-05, "mean_token_accuracy": 0.7312, "entropy": 1.1,
           "num_tokens": 512.0, "epoch": 0.5}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(console.time, "monotonic", fake)
    return fake


def state(step, max_steps=6):
    return SimpleNamespace(global_step=step, max_steps=max_steps, is_world_process_zero=True, epoch=step / max_steps)


def test_plain_output_has_one_line_per_logging_step_with_rate_and_eta(clock):
    out = io.StringIO()  # not a terminal
    callback = ConsoleProgress(stream=out)
    callback.on_train_begin(None, state(0), None)
    clock.now += 30.0  # a baseline evaluation before the first step: not counted in the rate
    callback.on_step_begin(None, state(0), None)
    for step in (1, 2):
        clock.now += 2.0
        callback.on_step_end(None, state(step), None)
    callback.on_log(None, state(2), None, logs=dict(DPO_LOG))
    clock.now += 2.0
    callback.on_step_end(None, state(3), None)
    callback.on_log(None, state(3), None, logs={"train_runtime": 8.3, "train_loss": 0.47, "epoch": 0.2})
    callback.on_log(None, state(3), None, logs={"eval_loss": 0.2948, "eval_rewards/accuracies": 0.9375,
                                                "eval_rewards/margins": 2.542, "eval_runtime": 2.1})
    callback.on_train_end(None, state(3), None)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue(), "no redraws off a terminal"
    # 2 steps in 4 s: 2.00 s/step; 4 steps left: ETA 8 s. The trainer's closing dict is not a step line.
    assert lines == [
        "[align-train] step 2/6 (33%), 2.00 s/step, ETA 8s  loss 0.3386  acc 0.8125  margin 1.413  grad 2.666  "
        "lr 6.55e-05",
        "[align-train] held-out eval at step 3: loss 0.2948  acc 0.9375  margin 2.542",
    ]


def test_sft_lines_show_token_accuracy_and_fast_loops_show_steps_per_second(clock):
    progress = console.Progress(total=100, stream=io.StringIO())
    clock.now += 5.0
    progress.update(20)
    assert progress.status() == "step 20/100 (20%), 4.00 step/s, ETA 20s"
    assert step_line(SFT_LOG, progress).endswith("loss 1.25  token_acc 0.7312  grad 3  lr 2.00e-05")
    assert "token_acc" not in step_line(DPO_LOG, progress), "a preference objective shows its reward accuracy"
    assert step_line({"train_runtime": 1.0, "train_loss": 0.5}, progress) is None


def test_a_terminal_gets_a_bar_and_lines_above_it(clock, capsys):
    out = io.StringIO()
    callback = ConsoleProgress(stream=out, bar=True)
    callback.on_train_begin(None, state(0, max_steps=4), None)
    callback.on_step_begin(None, state(0, max_steps=4), None)
    for step in (1, 2, 3, 4):
        clock.now += 1.0
        callback.on_step_end(None, state(step, max_steps=4), None)
        if step == 2:
            callback.on_log(None, state(step, max_steps=4), None, logs=dict(DPO_LOG))
            console.log("a message while the bar is shown")
    callback.on_train_end(None, state(4, max_steps=4), None)
    text = out.getvalue()
    assert "\r" in text and "4/4" in text and "step" in text, "tqdm's bar with step / total"
    assert "[align-train] step 2/4  loss 0.3386" in text, "the step line, without the rate the bar shows"
    assert "[align-train] a message while the bar is shown" in capsys.readouterr().err, "log lines go above the bar"
    assert console._BAR == [], "the bar is gone once training ends"


def test_plain_lines_only_on_the_main_process(clock):
    out = io.StringIO()
    callback = ConsoleProgress(stream=out)
    other = SimpleNamespace(global_step=2, max_steps=6, is_world_process_zero=False, epoch=0.1)
    callback.on_train_begin(None, other, None)
    callback.on_log(None, other, None, logs=dict(DPO_LOG))
    assert out.getvalue() == ""


def test_readable_numbers_and_durations():
    assert [console.number(v) for v in (0.0, 0.33861, 1.413, 6.545e-05, 12345.678, 3)] == [
        "0", "0.3386", "1.413", "6.55e-05", "1.235e+04", "3"]
    assert [console.duration(s) for s in (8, 75, 7260, None)] == ["8s", "1m15s", "2h01m", "?"]


# --------------------------------------------------------------------------- downloads and noise


def test_hub_downloads_report_plain_lines_off_a_terminal(tmp_path, monkeypatch, capsys):
    """A model file fetched from a (local stand-in) hub prints its progress as lines on stderr: no redraws."""
    import huggingface_hub
    from huggingface_hub import constants

    from align_train.train import quiet_libraries
    from tests.hub_stand_in import HubStandIn

    quiet_libraries()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    payload = os.urandom(3_000_000)
    with HubStandIn() as hub:
        hub.add_file("org/model", "model.safetensors", payload)
        path = huggingface_hub.hf_hub_download("org/model", "model.safetensors", cache_dir=tmp_path / "cache",
                                               endpoint=hub.endpoint)
    assert open(path, "rb").read() == payload
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [line for line in err.splitlines() if line.startswith("[align-train] download: ")]
    assert lines and "model.safetensors" in lines[-1] and "100% (3.00MB of 3.00MB" in lines[-1], err[-600:]
    assert "done in" in lines[-1]


def test_deepspeed_cpu_notice_is_dropped_unless_the_run_uses_deepspeed(monkeypatch):
    from align_train.train import quiet_libraries

    quiet_libraries()
    logger = logging.getLogger("DeepSpeed")
    record = logger.makeRecord("DeepSpeed", logging.WARNING, "real_accelerator.py", 213,
                               "Setting accelerator to CPU. If you have GPU or other accelerator, we were unable to "
                               "detect it.", (), None)
    other = logger.makeRecord("DeepSpeed", logging.WARNING, "x.py", 1, "ZeRO-3 partition sizes", (), None)
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    assert not logger.filter(record) and logger.filter(other)
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    assert logger.filter(record)
    quiet_libraries()
    assert sum(type(f).__name__ == "DeepSpeedNotices" for f in logger.filters) == 1, "installed once"
