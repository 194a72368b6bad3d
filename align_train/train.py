"""One training run, start to finish: check everything, load, train, save, summarise.

The order is the contract users rely on: the config and the data are checked before any
model is loaded, so a typo or a bad row costs seconds, not a GPU allocation; the run directory
is claimed before anything is written and its record written only once everything has loaded.
The objective and the tuning strategy are wired together here and nowhere else.
"""

from __future__ import annotations

import logging
import os
import time
import warnings

from transformers import set_seed

# First of align-train's modules: tracking imports transformers' integrations with their import-time print
# ("Running in WANDB offline mode") silenced, before TRL imports them.
from align_train.tracking import (  # isort: skip
    ConsoleProgress,
    JsonlMetricsCallback,
    TrackerReport,
    check_logger,
    configure_logger,
    tracker_names,
)
from align_train import console
from align_train.config import check_config
from align_train.data import load_data
from align_train.data.streaming import check_streaming
from align_train.distributed import on_main_process, process_state
from align_train.errors import ConfigError, DataError
from align_train.evaluation.evaluator import Evaluator, brief, check_eval_config, evaluation_records, headline
from align_train.evaluation.hook import EvaluationCallback
from align_train.hub import check_hub, publish
from align_train.launch.checks import Launch, check_launch, check_machine
from align_train.launch.fsdp import enable_cpu_fsdp, save_whole, trainer_args
from align_train.model_card import write_card
from align_train.models import check_model_config, count_parameters, frozen_copy, load_model, load_tokenizer
from align_train.nonfinite import NonFiniteGuard
from align_train.objectives import Objective, make_objective
from align_train.preemption import PreemptionCallback, stop_after_preemption
from align_train.run_dir import (
    CheckpointMarker,
    RunDir,
    RunOwnership,
    honour_umask,
    io_errors_named,
    plan_start,
    write_json,
)
from align_train.summary import RunResult, data_summary
from align_train.training_args import (
    check_trainer_kwarg_values,
    check_trainer_kwargs,
    common_trainer_args,
    strategy_settings,
)
from align_train.tuning import TuningStrategy, make_tuning
from align_train.tuning.latent_perturbation import check_latent_perturbation, latent_perturbation


def run(cfg, callbacks=(), overrides: list[str] | None = None) -> RunResult:
    """One run of the composed config; ``callbacks`` are extra TrainerCallbacks (e.g. a profiler or timer).

    ``overrides`` (the command line, when Hydra composed the config) are recorded with the run.
    """
    started = time.time()
    quiet_libraries()
    objective, tuning, launch = validate_config(cfg, process_state().num_processes)
    settings = apply_strategy_defaults(cfg, overrides)
    check_machine(cfg)
    run_dir = RunDir(cfg.output_dir)
    # Decided once, before anything is written: a refused start changes nothing on disk.
    start = on_main_process(lambda: plan_start(run_dir.root, cfg.resume))
    for note in start.notes:
        console.log(note)
    with RunOwnership(run_dir.root, start) as owner, io_errors_named(run_dir.root):
        data = load_data(cfg.data, objective.accepts, objective.name)
        evaluator = make_evaluator(cfg, run_dir, data.heldout)  # its prompts and judges load before the model
        tokenizer = load_tokenizer(cfg.model)
        announce_data(data, objective.check_data(data, tokenizer))
        configure_logger(cfg.logger, run_dir.root)
        set_seed(cfg.train.seed)
        enable_cpu_fsdp(launch, cfg.train.precision)
        model = load_model(cfg.model)
        if evaluator is not None:
            evaluator.check_model(model)  # a layer index beyond the model's blocks, before anything generates
        perturbation = latent_perturbation(cfg.train.latent_perturbation, model)  # LAPT; None when off
        reference = frozen_copy(model) if objective.needs_reference_model() and not tuning.provides_reference else None
        record_start(owner, cfg, data, overrides)  # everything has loaded: from here on the run writes its record
        data = objective.prepare(model, tokenizer, data, run_dir)
        tuning.prepare(model, tokenizer, run_dir.root)
        trainer, preemption = build_trainer(cfg, objective, tuning, tuning.apply(model), reference, tokenizer, data,
                                            run_dir, callbacks)
        parameters = count_parameters(trainer.model)  # before saving: NeST folds its vectors into the weights
        if evaluator is not None:
            trainer.add_callback(EvaluationCallback(evaluator, tokenizer, run_dir.metrics,
                                                    report_wandb="wandb" in tracker_names(cfg.logger)))
        train(trainer, preemption, start.resume_from, run_dir, perturbation)
        if data.eval is not None:
            trainer.evaluate()
        saved = save_final(trainer, tuning, run_dir)
        result = summarise(cfg, objective, tuning, trainer, data, saved, parameters, run_dir, start.resume_from, started,
                           settings)
        finish(cfg, trainer, result, run_dir)
        return result


# --------------------------------------------------------------------------- before anything loads


def validate_config(cfg, world_size: int = 1, launch=None) -> tuple[Objective, TuningStrategy, Launch]:
    """Every check that needs nothing loaded; raises ConfigError naming the key.

    ``launch`` describes the launcher (from an accelerate config, for align-launch); by default it is
    read from the environment the launcher gave this process. Returned with the plug-ins: whether
    the run is sharded is answered there, once.
    """
    check_config(cfg)  # closed (no unknown key, '+' included), finite, in the declared bounds
    objective = make_objective(cfg.objective)
    tuning = make_tuning(cfg.tuning)
    objective.validate(cfg)
    tuning.validate()
    check_model_config(cfg.model, tuning.name, getattr(cfg.tuning, "save_merged", False))
    check_logger(cfg.logger)
    check_hub(cfg.hub)
    check_trainer_kwargs(dict(cfg.train.trainer_kwargs), objective.trl_field_names())
    check_latent_perturbation(cfg.train.latent_perturbation)
    check_streaming(cfg)
    if cfg.eval.enabled:
        check_eval_config(cfg.eval)
        vllm = [f"eval.{name}.generation.backend" for name in ("refusal", "over_refusal")
                if getattr(cfg.eval, name).enabled and getattr(cfg.eval, name).generation.backend == "vllm"]
        if vllm and cfg.eval.inline:
            raise ConfigError(f"{vllm[0]}=vllm loads a saved model, and the hook scores the weights in memory: set "
                              "eval.inline=false and score the checkpoints with align-eval RUN")
    common_trainer_args(cfg, cfg.output_dir, world_size)  # batch divisibility, scheduler and optimizer names
    check_trainer_kwarg_values(dict(cfg.train.trainer_kwargs), objective.config_class)
    if cfg.train.eval_steps > 0 and not (cfg.data.eval or cfg.data.eval_fraction > 0):
        raise ConfigError(f"train.eval_steps={cfg.train.eval_steps} evaluates on held-out data, but the run has none: "
                          "set data.eval_fraction or data.eval, or train.eval_steps=0")
    if getattr(cfg.objective, "sync_ref_model", False) and tuning.provides_reference:
        raise ConfigError(f"objective.sync_ref_model=true updates a reference copy, but tuning={tuning.name} uses the "
                          "adapter-disabled base as the reference (there is no copy to update)")
    launch = check_launch(cfg, world_size, launch)  # what the launcher (DeepSpeed, FSDP) or the strategy cannot run
    return objective, tuning, launch


def apply_strategy_defaults(cfg, overrides: list[str] | None) -> dict[str, dict]:
    """Settings left to the tuning strategy take its default; config.yaml then records the values the run uses.

    Returns each such setting's value and origin (command line, recipe, or the strategy's default) for the
    log and the summary.
    """
    settings = strategy_settings(cfg, overrides)
    for key, setting in settings.items():
        cfg.train[key] = setting["value"]
        console.log(f"train.{key}={setting['value']:g} ({setting['origin']})")
    return settings


def quiet_libraries() -> None:
    """Library output that drowns the run's own: per-operation bars, notices that do not apply, deprecation chatter.

    What a person waits on stays visible: hub downloads (models, and the files of hub datasets)
    report progress, as a bar on a terminal and as plain lines in a log (console.show_downloads).
    datasets' bars (one per map or filter) and transformers' loading bars go; so does DeepSpeed's
    "Setting accelerator to CPU" notice, printed on every import, unless the run uses DeepSpeed.
    """
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    console.show_downloads()
    deepspeed_logger = logging.getLogger("DeepSpeed")
    if not any(isinstance(f, DeepSpeedNotices) for f in deepspeed_logger.filters):
        deepspeed_logger.addFilter(DeepSpeedNotices())
    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)


class DeepSpeedNotices(logging.Filter):
    """DeepSpeed's accelerator notice matters only to a run that uses DeepSpeed (accelerate sets the variable)."""

    NOTICES = ("Setting accelerator to CPU",)

    def filter(self, record: logging.LogRecord) -> bool:
        if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
            return True
        return not str(record.getMessage()).startswith(self.NOTICES)


def make_evaluator(cfg, run_dir: RunDir, heldout) -> Evaluator | None:
    """The evaluation hook's evaluator, when the run scores inline (``eval.enabled`` and ``eval.inline``)."""
    if not (cfg.eval.enabled and cfg.eval.inline):
        return None
    return Evaluator(cfg.eval, RunDir(run_dir).eval_dir, heldout=heldout, max_length=cfg.model.max_length)


def announce_data(data, warnings_found: list[str]) -> None:
    for warning in warnings_found:
        console.log(f"warning: {warning}")
    if data.report["skipped_rows"]:
        console.log(f"skipped {data.report['skipped_rows']} invalid row(s) (data.skip_invalid_rows=true); see "
                    "data_report.json")
    train_rows = "streamed" if data.report.get("streamed") else data.report["train_rows"]
    console.log(f"data: {train_rows} train / {data.report['eval_rows']} held-out rows, "
                f"format {data.format}")


def record_start(owner: RunOwnership, cfg, data, overrides) -> None:
    changes = owner.commit(cfg, process_state().num_processes, overrides)
    if changes:
        console.log(f"resuming with settings changed since the last segment (kept in segments/): {'; '.join(changes)}")
    if process_state().is_main_process:
        write_json(RunDir(owner.run_dir).data_report, data.report)


# --------------------------------------------------------------------------- training


def training_callbacks(cfg, run_dir) -> tuple[list, PreemptionCallback]:
    """The run's own callbacks; the marker first, so a checkpoint counts as complete before slower on_save work.

    The tracker report comes after transformers' integration callbacks (the trainer puts those first),
    so their runs exist when it adds the config to them.
    """
    from omegaconf import OmegaConf

    preemption = PreemptionCallback()
    run = RunDir(run_dir)
    callbacks = [CheckpointMarker(keep=cfg.train.save_total_limit), preemption, JsonlMetricsCallback(run.metrics),
                 ConsoleProgress()]
    if tracker_names(cfg.logger):
        callbacks.append(TrackerReport(OmegaConf.to_container(cfg, resolve=True), run.run_info))
    return callbacks, preemption


def make_guard(cfg, run_dir) -> NonFiniteGuard:
    return NonFiniteGuard(RunDir(run_dir).root, skip=cfg.train.skip_nonfinite_steps)


def build_trainer(cfg, objective, tuning, model, reference, tokenizer, data, run_dir: RunDir, callbacks):
    """The objective's TRL trainer with the strategy's extras, the run's callbacks and the non-finite guard."""
    common = {**common_trainer_args(cfg, str(run_dir), process_state().num_processes), **trainer_args()}
    args = objective.make_args(common, data)
    run_callbacks, preemption = training_callbacks(cfg, run_dir)
    trainer = objective.build_trainer(model, reference, tokenizer, data, args, [*run_callbacks, *callbacks],
                                      **tuning.trainer_kwargs())
    # ConsoleProgress prints the steps: not the trainer's raw dicts (PrinterCallback) nor its own bar.
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    for callback in run_callbacks:
        if isinstance(callback, TrackerReport):
            callback.attach(trainer)
    make_guard(cfg, run_dir).watch(trainer)
    dropped = rows_dropped_by_trainer(trainer, data, cfg.model.max_length)
    if dropped and process_state().is_main_process:
        write_json(run_dir.data_report, {**data.report, "dropped_by_trainer": dropped})
    parameters = count_parameters(trainer.model)
    console.log(f"{tuning.name} tuning: {parameters['trainable']:,} of {parameters['total']:,} parameters train")
    return trainer, preemption


def rows_dropped_by_trainer(trainer, data, max_length: int) -> dict:
    """Rows TRL removed while tokenising (a prompt that alone fills max_length leaves nothing to learn).

    TRL drops them quietly; here the count is printed and recorded, and a set left empty is an error.
    Packed SFT data changes its row count by design and is not checked.
    """
    if getattr(trainer.args, "packing", False):
        return {}
    dropped = {}
    for split, before, after in (("train", data.train, trainer.train_dataset),
                                 ("eval", data.eval, trainer.eval_dataset)):
        if before is None or after is None or not hasattr(after, "__len__") or len(after) >= len(before):
            continue
        dropped[split] = len(before) - len(after)
        if len(after) == 0:
            raise DataError(
                f"every {split} row was removed while tokenising: their prompts alone fill model.max_length="
                f"{max_length} tokens; raise model.max_length or shorten the prompts"
            )
        console.log(f"warning: {dropped[split]} of {len(before)} {split} rows were removed while tokenising because "
                    f"their prompt alone fills model.max_length={max_length} tokens (recorded in data_report.json); "
                    f"raise model.max_length to keep them")
    return dropped


def train(trainer, preemption: PreemptionCallback, resume_from: str | None, run_dir: RunDir,
          perturbation=None) -> None:
    """``perturbation``: LAPT's hooks, attached for the training loop only."""
    if resume_from:
        console.log(f"resuming from {resume_from}")
    if perturbation is not None:
        console.log(f"latent perturbation training: blocks {perturbation.layers}, scale {perturbation.scale:g}, "
                    f"seed {perturbation.seed}")
    try:
        if perturbation is None:
            trainer.train(resume_from_checkpoint=resume_from)
        else:
            with perturbation:
                trainer.train(resume_from_checkpoint=resume_from)
    finally:
        preemption.restore()
    stop_after_preemption(preemption, run_dir.root, process_state().is_main_process)


# --------------------------------------------------------------------------- after training


def save_final(trainer, tuning: TuningStrategy, run_dir: RunDir) -> str:
    save_whole(trainer)  # FSDP: final/ is the whole model, not the shards
    saved = tuning.save_final(trainer, run_dir)
    if process_state().is_main_process:
        honour_umask(run_dir.final)
        # The trainer pickles its arguments beside the weights; the final directory stays pickle-free
        # (config.yaml in the run directory records every setting).
        (run_dir.final / "training_args.bin").unlink(missing_ok=True)
    return saved


def summarise(cfg, objective, tuning, trainer, data, saved: str, parameters: dict, run_dir: RunDir, resume_from,
              started, settings: dict | None = None) -> RunResult:
    """The run summary: what trained on what, and the evaluator's scores of the start and the final model."""
    evaluations = [brief(r) for r in evaluation_records(run_dir.eval_dir)]
    scored = [r for r in evaluations if headline(r)]
    before = headline(scored[0]) if scored and scored[0]["step"] == 0 else {}
    after = headline(scored[-1]) if scored and scored[-1]["step"] == trainer.state.global_step else {}
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    result = RunResult(
        run_dir=str(run_dir), final_dir=str(run_dir.final), saved=saved, recipe=cfg.run_name,
        objective=objective.name, tuning=tuning.name, model=cfg.model.name_or_path,
        parameters=parameters,
        data=data_summary(data.report),
        steps=trainer.state.global_step, train_loss=losses[-1] if losses else None, resumed_from=resume_from,
        before=before, after=after, evaluations=evaluations, seconds=time.time() - started,
        settings=settings or {},
    )
    if process_state().is_main_process:
        write_json(run_dir.summary, result.__dict__)
        print(result.render(), flush=True)
    return result


def finish(cfg, trainer, result: RunResult, run_dir: RunDir) -> None:
    """After the summary: the model card in final/, the summary in the trackers, the push to the hub (main process)."""
    report = next((c for c in trainer.callback_handler.callbacks if isinstance(c, TrackerReport)), None)
    if not process_state().is_main_process:
        return
    card = write_card(run_dir)
    if report is not None:
        report.summary(result.before, result.after, result.evaluations, result.steps)
        report.finish()
    if cfg.hub.push:
        console.log(f"pushing {run_dir.final} with its model card ({card.name}) to {cfg.hub.repo_id}", topic="hub")
    url = publish(run_dir, cfg.hub)
    if url:
        console.log(f"pushed: {url}", topic="hub")
