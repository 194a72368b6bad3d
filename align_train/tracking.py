"""Metrics: a local JSON Lines file always, progress a person reads, and the trackers the user names.

``logger.name`` is one of transformers' reporting integrations, or a list of them (``wandb``,
``tensorboard``, ``mlflow``, ``trackio``, ``comet``, ...). transformers' own callbacks send the
trainer's metrics; ``TrackerReport`` adds align-train's record to the same runs: the composed config
and ``run_info.json`` when training starts, and at the end the evaluation hook's scores per step and
the summary's before / after table. Every tracker is configured by environment before the trainer
starts: offline by default (``logger.mode``; no login, no network, never a prompt inside a batch
job), its local files under the run directory, and only the main process reports.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import time
from pathlib import Path

from transformers import TrainerCallback

from align_train import console
from align_train.errors import ConfigError

MODES = ("offline", "online", "disabled")
WANDB_MODES = MODES
ALIASES = {"comet": "comet_ml"}  # the name people use -> transformers' integration name
# The integrations align-train writes its own record to (others get the trainer's metrics only), and the
# extra that installs each one's package.
REPORTED = {"wandb": "wandb", "tensorboard": "tensorboard", "mlflow": "mlflow", "trackio": "trackio",
            "comet_ml": "comet"}


def _integrations_module():
    # transformers prints "[INFO] Running in WANDB offline mode" when this module is imported with WANDB_MODE set.
    with contextlib.redirect_stdout(io.StringIO()):
        from transformers.integrations import integration_utils
    return integration_utils


_integrations_module()  # now, before anything else imports it (TRL does) and it prints


def integration_names() -> list[str]:
    """Every reporting integration transformers knows."""
    return sorted(_integrations_module().INTEGRATION_TO_CALLBACK)


def requested_trackers(logger_cfg) -> list[str]:
    """``logger.name`` as a list of transformers' integration names ([] for none)."""
    raw = logger_cfg.name
    names = [raw] if isinstance(raw, str) or raw is None else list(raw)
    names = [ALIASES.get(str(n).strip(), str(n).strip()) for n in names if n is not None]
    return list(dict.fromkeys(n for n in names if n and n != "none"))


def tracker_names(logger_cfg) -> list[str]:
    """The trackers the run reports to: those requested, none when ``logger.mode=disabled``."""
    return [] if logger_cfg.mode == "disabled" else requested_trackers(logger_cfg)


def report_to(logger_cfg) -> list[str]:
    """TrainingArguments.report_to."""
    return tracker_names(logger_cfg)


def trainer_args(logger_cfg) -> dict:
    """The TrainingArguments fields the logger settings own: where metrics go, and trackio's project."""
    return {"report_to": report_to(logger_cfg), "project": logger_cfg.project}


def check_logger(logger_cfg) -> None:
    """The names are integrations transformers has, the mode is known, and each one's package is installed."""
    raw = logger_cfg.name
    names = [raw] if isinstance(raw, str) or raw is None else list(raw)
    if not names or any(not isinstance(n, str) or not n.strip() for n in names):
        raise ConfigError(f"logger.name is {raw!r}; expected none, an integration name or a list of them "
                          "(e.g. logger.name=[tensorboard,wandb])")
    if logger_cfg.mode not in MODES:
        raise ConfigError(f"logger.mode is '{logger_cfg.mode}'; expected one of {', '.join(MODES)}")
    wanted = [ALIASES.get(n.strip(), n.strip()) for n in names if n.strip() != "none"]
    if "none" in [n.strip() for n in names] and wanted:
        raise ConfigError(f"logger.name is {list(names)}: 'none' cannot be combined with trackers")
    if not wanted:
        return
    known = integration_names()
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise ConfigError(f"logger.name: {', '.join(unknown)} is not one of transformers' integrations; expected none "
                          f"or any of {', '.join(['comet', *known])} (a list for several)")
    available = set(_integrations_module().get_available_reporting_integrations())
    for name in wanted:
        if name not in available:
            extra = REPORTED.get(name)
            hint = f"pip install 'align-train[{extra}]'" if extra else f"install the package of the {name} integration"
            raise ConfigError(f"logger.name={name} needs its package, which is not installed: {hint}")


def configure_logger(logger_cfg, run_dir: Path) -> None:
    """Environment for the trackers' transformers integrations; their local files go under the run directory."""
    check_logger(logger_cfg)
    names = requested_trackers(logger_cfg)
    run_dir = Path(run_dir)
    offline = logger_cfg.mode != "online"
    if "wandb" in names:
        os.environ["WANDB_DIR"] = str(run_dir)
        os.environ["WANDB_MODE"] = logger_cfg.mode
        os.environ["WANDB_PROJECT"] = logger_cfg.project
        os.environ.setdefault("WANDB_SILENT", "true")
        if logger_cfg.entity:
            os.environ["WANDB_ENTITY"] = logger_cfg.entity
        if logger_cfg.tags:
            os.environ["WANDB_TAGS"] = ",".join(logger_cfg.tags)
    if "tensorboard" in names:
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "tensorboard")
    if "mlflow" in names:
        if offline or not os.environ.get("MLFLOW_TRACKING_URI"):
            os.environ["MLFLOW_TRACKING_URI"] = (run_dir / "mlruns").resolve().as_uri()
        os.environ["MLFLOW_EXPERIMENT_NAME"] = logger_cfg.project
        if logger_cfg.tags:
            os.environ["MLFLOW_TAGS"] = json.dumps({tag: "true" for tag in logger_cfg.tags})
    if "comet_ml" in names:
        os.environ["COMET_PROJECT_NAME"] = logger_cfg.project
        os.environ["COMET_START_ONLINE"] = "false" if offline else "true"
        os.environ["COMET_OFFLINE_DIRECTORY"] = str(run_dir / "comet")
        if logger_cfg.entity:
            os.environ["COMET_WORKSPACE"] = logger_cfg.entity
    if "trackio" in names and offline:
        os.environ.pop("TRACKIO_SPACE_ID", None)  # a Space would upload: offline keeps trackio's local database


# --------------------------------------------------------------------------- the local record


class JsonlMetricsCallback(TrainerCallback):
    """Appends one JSON object per logging step to ``metrics.jsonl`` (main process only)."""

    def __init__(self, path: Path, extra: dict | None = None):
        self.path = Path(path)
        self.extra = extra or {}

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, "epoch": state.epoch, "time": time.time(), **self.extra}
        record.update({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in logs.items()})
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


# --------------------------------------------------------------------------- what a person reads

# The metrics a step's line shows, in order, under short names. An objective's reward metrics (DPO, KTO,
# BCO, SimPO, ORPO, CPO all log TRL's rewards/*) take the place of the token accuracy of SFT / midtraining.
KEY_METRICS = (("loss", "loss"), ("rewards/accuracies", "acc"), ("rewards/margins", "margin"), ("kl", "kl"),
               ("mean_token_accuracy", "token_acc"), ("grad_norm", "grad"), ("learning_rate", "lr"))
FINAL_KEYS = ("train_runtime", "train_loss", "train_samples_per_second")  # the trainer's closing log: not a step


def step_metrics(logs: dict, prefix: str = "") -> list[tuple[str, float]]:
    """(short name, value) of a log's key metrics; ``prefix`` is ``eval_`` for held-out evaluations."""
    rewards = any(k.startswith(f"{prefix}rewards/") for k in logs)
    shown = []
    for key, label in KEY_METRICS:
        if rewards and key == "mean_token_accuracy":
            continue
        value = logs.get(prefix + key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            shown.append((label, value))
    return shown


def step_line(logs: dict, progress: console.Progress | None = None, step: int | None = None) -> str | None:
    """One compact line for a logging step (or a held-out evaluation); None for logs that are not one."""
    if any(k in logs for k in FINAL_KEYS):
        return None
    evaluation = any(k.startswith("eval_") for k in logs)
    shown = step_metrics(logs, "eval_" if evaluation else "")
    if not shown:
        return None
    metrics = "  ".join(f"{label} {console.number(value)}" for label, value in shown)
    if evaluation:
        return f"held-out eval at step {step if step is not None else '?'}: {metrics}"
    if progress is None:
        return f"step {step}: {metrics}"
    if progress.bar is not None:  # the bar shows rate and ETA
        total = f"/{progress.total}" if progress.total else ""
        return f"step {progress.step}{total}  {metrics}"
    return f"{progress.status()}  {metrics}"


class ConsoleProgress(TrainerCallback):
    """The run's progress on the main process: a bar with rate and ETA on a terminal, and one line per logging step.

    Replaces the trainer's printer (raw dicts) and its tqdm bar. Off a terminal nothing redraws: each
    step's line carries the step / total, the rate and the ETA instead.
    """

    def __init__(self, stream=None, bar: bool | None = None):
        self.stream = stream
        self.bar = bar
        self.progress: console.Progress | None = None
        self.clock_started = False

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.progress = console.Progress(state.max_steps, state.global_step, desc="train", stream=self.stream,
                                             bar=self.bar)
            self.clock_started = False

    def on_step_begin(self, args, state, control, **kwargs):
        if self.progress is not None and not self.clock_started:
            self.progress.restart_clock()  # what ran before the first step (a baseline evaluation) is not a step
            self.clock_started = True

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if self.progress is not None:
            self.progress.update(state.global_step)
        line = step_line(logs, self.progress, state.global_step)
        if line is None:
            return
        if self.progress is not None:
            self.progress.line(line)
        else:
            console.log(line)

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.close()
            self.progress = None


# --------------------------------------------------------------------------- align-train's record in the trackers


def summary_rows(before: dict, after: dict) -> list[list]:
    """[metric, before, after] for each headline metric of the summary (None where a side has no value)."""
    keys = list(before) + [k for k in after if k not in before]
    return [[key, before.get(key), after.get(key)] for key in keys]


def markdown_table(rows: list[list]) -> str:
    def cell(value):
        return "-" if value is None else f"{value:.4f}"

    lines = ["| metric | before | after |", "| --- | --- | --- |"]
    lines += [f"| {key} | {cell(b)} | {cell(a)} |" for key, b, a in rows]
    return "\n".join(lines)


def _flat(node, prefix: str = "") -> dict:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): node}


class _Sink:
    """align-train's record in one tracker's run (which transformers' callback created)."""

    def __init__(self, callback):
        self.callback = callback

    def config(self, config: dict, run_info: dict) -> None: ...

    def summary(self, rows: list[list], evaluations: list[dict], step: int) -> None: ...

    def finish(self) -> None: ...


class _Wandb(_Sink):
    def __init__(self, callback):
        super().__init__(callback)
        self.wandb = callback._wandb
        self.run = self.wandb.run

    def config(self, config, run_info):
        if self.run is not None:
            self.run.config.update({"align_train": config, "align_train_run_info": run_info}, allow_val_change=True)

    def summary(self, rows, evaluations, step):
        if self.run is None:
            return
        self.run.summary.update({f"align_train/{side}/{key}": value for key, b, a in rows
                                 for side, value in (("before", b), ("after", a)) if value is not None})
        self.run.log({"align_train/summary": self.wandb.Table(columns=["metric", "before", "after"],
                                                              data=[list(r) for r in rows])})

    def finish(self):
        if self.run is not None and self.wandb.run is self.run:
            self.wandb.finish()  # the next run (a pipeline's next stage) starts a run of its own


class _TensorBoard(_Sink):
    def writer(self):
        if self.callback.tb_writer is None:  # closed at the end of training: the same directory again
            self.callback.tb_writer = self.callback._SummaryWriter(log_dir=self.callback.logging_dir)
        return self.callback.tb_writer

    def config(self, config, run_info):
        from omegaconf import OmegaConf

        yaml = OmegaConf.to_yaml(OmegaConf.create(config))
        writer = self.writer()
        writer.add_text("align_train/config", "    " + yaml.replace("\n", "\n    "))
        writer.add_text("align_train/run_info", "    " + json.dumps(run_info, indent=2).replace("\n", "\n    "))
        writer.flush()

    def summary(self, rows, evaluations, step):
        writer = self.writer()
        writer.add_text("align_train/summary", markdown_table(rows), step)
        for record in evaluations:
            for key, value in record.items():
                if key not in ("step", "failed", "skipped") and isinstance(value, (int, float)):
                    writer.add_scalar(f"align_train/eval/{key}", value, record["step"])
        writer.flush()

    def finish(self):
        if self.callback.tb_writer is not None:
            self.callback.tb_writer.close()
            self.callback.tb_writer = None


class _MLflow(_Sink):
    def __init__(self, callback):
        super().__init__(callback)
        run = callback._ml_flow.active_run()
        self.run_id = run.info.run_id if run is not None else None
        self.client = callback._ml_flow.tracking.MlflowClient() if self.run_id else None

    def config(self, config, run_info):
        if self.client is not None:
            self.client.log_dict(self.run_id, config, "align_train/config.json")
            self.client.log_dict(self.run_id, run_info, "align_train/run_info.json")

    def summary(self, rows, evaluations, step):
        if self.client is None:
            return
        self.client.log_text(self.run_id, markdown_table(rows), "align_train/summary.md")
        for record in evaluations:
            for key, value in record.items():
                if key not in ("step", "failed", "skipped") and isinstance(value, (int, float)):
                    self.client.log_metric(self.run_id, f"align_train/eval/{key}", value, step=record["step"])


class _Comet(_Sink):
    def __init__(self, callback):
        super().__init__(callback)
        self.experiment = callback._experiment

    def config(self, config, run_info):
        if self.experiment is not None:
            self.experiment.log_parameters(_flat(config), prefix="align_train")
            self.experiment.log_asset_data(json.dumps(run_info, indent=2), name="run_info.json")

    def summary(self, rows, evaluations, step):
        if self.experiment is None:
            return
        self.experiment.log_text(markdown_table(rows), metadata={"align_train": "summary"})
        for record in evaluations:
            for key, value in record.items():
                if key not in ("step", "failed", "skipped") and isinstance(value, (int, float)):
                    self.experiment.log_metric(f"align_train/eval/{key}", value, step=record["step"])

    def finish(self):
        if self.experiment is not None:
            self.experiment.end()


class _Trackio(_Sink):
    def __init__(self, callback):
        super().__init__(callback)
        self.trackio = callback._trackio

    def config(self, config, run_info):
        self.trackio.config.update({"align_train": config, "align_train_run_info": run_info}, allow_val_change=True)

    def summary(self, rows, evaluations, step):
        args = self.args
        self.trackio.init(project=args.project, name=args.run_name, resume="allow")  # finished at training's end
        try:
            self.trackio.log({f"align_train/{side}/{key}": value for key, b, a in rows
                              for side, value in (("before", b), ("after", a)) if value is not None})
        finally:
            self.trackio.finish()


SINKS = {"WandbCallback": _Wandb, "TensorBoardCallback": _TensorBoard, "MLflowCallback": _MLflow,
         "CometCallback": _Comet, "TrackioCallback": _Trackio}


class TrackerReport(TrainerCallback):
    """align-train's record in the runs transformers' integrations opened (main process only).

    At the start of training: the composed config and ``run_info.json``. After the run (``summary``):
    the evaluation hook's scores at each scored step and the summary's before / after table. A
    tracker that fails here costs a warning, never the run.
    """

    def __init__(self, config: dict, run_info_path: Path):
        self.config = config
        self.run_info_path = Path(run_info_path)
        self.handler = None
        self.sinks: list[_Sink] = []

    def attach(self, trainer) -> "TrackerReport":
        self.handler = trainer.callback_handler
        return self

    def _each(self, what: str, action) -> None:
        for sink in self.sinks:
            try:
                action(sink)
            except Exception as err:  # a tracker's failure is reported, training's result stands
                console.log(f"warning: could not send the {what} to {type(sink).__name__.strip('_').lower()} "
                            f"({type(err).__name__}: {err})")

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or self.handler is None:
            return
        self.sinks = []
        for callback in self.handler.callbacks:
            sink = SINKS.get(type(callback).__name__)
            if sink is not None:
                try:
                    made = sink(callback)
                except Exception as err:
                    console.log(f"warning: {type(callback).__name__}: {type(err).__name__}: {err}")
                    continue
                made.args = args
                self.sinks.append(made)
        info = json.loads(self.run_info_path.read_text()) if self.run_info_path.is_file() else {}
        self._each("config", lambda sink: sink.config(self.config, info))

    def summary(self, before: dict, after: dict, evaluations: list[dict], step: int) -> None:
        rows = summary_rows(before, after)
        self._each("summary", lambda sink: sink.summary(rows, evaluations, step))

    def finish(self) -> None:
        self._each("end of the run", lambda sink: sink.finish())
        self.sinks = []
