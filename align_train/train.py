"""One training run, start to finish: check everything, load, train, save, summarise.

The order is the contract users rely on: the config and the data are checked before any
model is loaded, so a typo or a bad row costs seconds, not a GPU allocation. The objective
and the tuning strategy are wired together here and nowhere else.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

from transformers import set_seed

from align_train.data import load_data
from align_train.evaluation.evaluator import Evaluator, brief, check_eval_config, evaluation_records, headline
from align_train.evaluation.hook import EvaluationCallback
from align_train.errors import ConfigError, DataError
from align_train.distributed import on_main_process, process_state
from align_train.launch.checks import check_launch, check_machine
from align_train.models import DTYPES, INITS, count_parameters, frozen_copy, load_model, load_tokenizer
from align_train.nonfinite import NonFiniteGuard
from align_train.objectives import Objective, make_objective
from align_train.objectives.base import check_choice
from align_train.preemption import PreemptionCallback, stop_after_preemption
from align_train.config import check_config
from align_train.run_dir import CheckpointMarker, RunOwnership, honour_umask, plan_start, reported_io_error, write_json
from align_train.summary import RunResult, headline_metrics
from align_train.tracking import JsonlMetricsCallback, check_logger, configure_logger
from align_train.training_args import check_trainer_kwarg_values, check_trainer_kwargs, common_trainer_args
from align_train.tuning import TuningStrategy, make_tuning


def quiet_libraries() -> None:
    """Progress bars and deprecation chatter from the libraries drown the run's own output."""
    import datasets
    import huggingface_hub.utils
    import transformers

    datasets.disable_progress_bars()
    huggingface_hub.utils.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)


def log(message: str) -> None:
    if process_state().is_main_process:
        print(f"[align-train] {message}", file=sys.stderr, flush=True)


def validate_config(cfg, world_size: int = 1, launch=None) -> tuple[Objective, TuningStrategy]:
    """Every check that needs nothing loaded; raises ConfigError naming the key.

    ``launch`` describes the launcher (from an accelerate config, for align-launch); by default it is
    read from the environment the launcher gave this process.
    """
    check_config(cfg)  # closed (no unknown key, '+' included), finite, in the declared bounds
    objective = make_objective(cfg.objective)
    tuning = make_tuning(cfg.tuning)
    objective.validate(cfg)
    tuning.validate()
    check_choice("model.dtype", cfg.model.dtype, DTYPES)
    check_choice("model.init", cfg.model.init, INITS)
    check_logger(cfg.logger)
    check_trainer_kwargs(dict(cfg.train.trainer_kwargs), objective.trl_field_names())
    if cfg.eval.enabled:
        check_eval_config(cfg.eval)
    common_trainer_args(cfg, cfg.output_dir, world_size)  # batch divisibility, scheduler and optimizer names
    check_trainer_kwarg_values(dict(cfg.train.trainer_kwargs), objective.config_class)
    if cfg.train.eval_steps > 0 and not (cfg.data.eval or cfg.data.eval_fraction > 0):
        raise ConfigError(f"train.eval_steps={cfg.train.eval_steps} evaluates on held-out data, but the run has none: "
                          "set data.eval_fraction or data.eval, or train.eval_steps=0")
    if getattr(cfg.objective, "sync_ref_model", False) and tuning.provides_reference:
        raise ConfigError(f"objective.sync_ref_model=true updates a reference copy, but tuning={tuning.name} uses the "
                          "adapter-disabled base as the reference (there is no copy to update)")
    check_launch(cfg, world_size, launch)  # combinations the launcher (DeepSpeed, FSDP) or machine cannot run
    return objective, tuning


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
        log(f"warning: {dropped[split]} of {len(before)} {split} rows were removed while tokenising because "
            f"their prompt alone fills model.max_length={max_length} tokens (recorded in data_report.json); "
            f"raise model.max_length to keep them")
    return dropped


def make_evaluator(cfg, run_dir: Path, heldout) -> Evaluator | None:
    """The evaluation hook's evaluator, when the run scores inline (``eval.enabled`` and ``eval.inline``)."""
    if not (cfg.eval.enabled and cfg.eval.inline):
        return None
    return Evaluator(cfg.eval, Path(run_dir) / "eval", heldout=heldout, max_length=cfg.model.max_length)


def summary_examples(cfg, evaluator, heldout) -> int | None:
    """Held-out rows the run summary measures before and after, or None when it measures nothing.

    With the evaluation hook on, its step 0 and final scores are the before / after: no second pass.
    """
    if not (cfg.summary.enabled and evaluator is None and heldout):
        return None
    return cfg.summary.max_examples


def training_callbacks(cfg, run_dir: Path) -> tuple[list, PreemptionCallback]:
    """The run's own callbacks; the marker first, so a checkpoint counts as complete before slower on_save work."""
    preemption = PreemptionCallback()
    return [CheckpointMarker(keep=cfg.train.save_total_limit), preemption,
            JsonlMetricsCallback(Path(run_dir) / "metrics.jsonl")], preemption


def make_guard(cfg, run_dir: Path) -> NonFiniteGuard:
    return NonFiniteGuard(Path(run_dir), skip=cfg.train.skip_nonfinite_steps)


def run(cfg, callbacks=(), overrides: list[str] | None = None) -> RunResult:
    """One run of the composed config; ``callbacks`` are extra TrainerCallbacks (e.g. a profiler or timer).

    ``overrides`` (the command line, when Hydra composed the config) are recorded with the run.
    """
    started = time.time()
    quiet_libraries()
    state = process_state()
    objective, tuning = validate_config(cfg, state.num_processes)
    check_machine(cfg)
    run_dir = Path(cfg.output_dir)
    # Decided once, before anything is written: a refused start changes nothing on disk.
    start = on_main_process(lambda: plan_start(run_dir, cfg.resume))
    for note in start.notes:
        log(note)
    with RunOwnership(run_dir, start) as owner:
        try:
            return _run_owned(cfg, callbacks, overrides, objective, tuning, owner, started)
        except (OSError, RuntimeError) as err:
            reported = reported_io_error(err, run_dir)
            if reported is not None:
                raise reported from err
            raise


def _run_owned(cfg, callbacks, overrides, objective, tuning, owner: RunOwnership, started: float) -> RunResult:
    state = process_state()
    run_dir = owner.run_dir
    resume_from = owner.start.resume_from

    data = load_data(cfg.data, objective.accepts, objective.name)
    evaluator = make_evaluator(cfg, run_dir, data.heldout)  # its prompts and judges load before the model
    tokenizer = load_tokenizer(cfg.model)
    warnings = objective.check_data(data, tokenizer)
    configure_logger(cfg.logger, run_dir)
    for warning in warnings:
        log(f"warning: {warning}")
    if data.report["skipped_rows"]:
        log(f"skipped {data.report['skipped_rows']} invalid row(s) (data.skip_invalid_rows=true); see data_report.json")
    log(f"data: {data.report['train_rows']} train / {data.report['eval_rows']} held-out rows, format {data.format}")

    set_seed(cfg.train.seed)
    model = load_model(cfg.model)
    reference = None
    if objective.needs_reference_model() and not tuning.provides_reference:
        reference = frozen_copy(model)
    # Everything the run needs has loaded: from here on it writes its record.
    changes = owner.commit(cfg, state.num_processes, overrides)
    if changes:
        log(f"resuming with settings changed since the last segment (kept in segments/): {'; '.join(changes)}")
    if state.is_main_process:
        write_json(run_dir / "data_report.json", data.report)
    max_length = cfg.model.max_length
    summary_rows = summary_examples(cfg, evaluator, data.heldout) if state.is_main_process else None
    before, base_scores = {}, None
    if summary_rows:
        before, base_scores = headline_metrics(model, tokenizer, data.heldout, summary_rows, max_length)

    tuning.prepare(model, tokenizer, run_dir)
    model = tuning.apply(model)
    args = objective.make_args(common_trainer_args(cfg, str(run_dir), state.num_processes), data)
    run_callbacks, preemption = training_callbacks(cfg, run_dir)
    trainer = objective.build_trainer(
        model, reference, tokenizer, data, args, [*run_callbacks, *callbacks], **tuning.trainer_kwargs()
    )
    make_guard(cfg, run_dir).watch(trainer)
    dropped = rows_dropped_by_trainer(trainer, data, cfg.model.max_length)
    if dropped and state.is_main_process:
        write_json(run_dir / "data_report.json", {**data.report, "dropped_by_trainer": dropped})
    if evaluator is not None:
        sharded = trainer.is_fsdp_enabled or (
            trainer.is_deepspeed_enabled and trainer.accelerator.state.deepspeed_plugin.zero_stage == 3
        )
        trainer.add_callback(EvaluationCallback(evaluator, tokenizer, run_dir / "metrics.jsonl", sharded=sharded,
                                                report_wandb=cfg.logger.name == "wandb"))
    parameters = count_parameters(trainer.model)
    log(f"{tuning.name} tuning: {parameters['trainable']:,} of {parameters['total']:,} parameters train")
    if resume_from:
        log(f"resuming from {resume_from}")
    try:
        trainer.train(resume_from_checkpoint=resume_from)
    finally:
        preemption.restore()
    stop_after_preemption(preemption, run_dir, state.is_main_process)
    if data.eval is not None:
        trainer.evaluate()

    final_dir = run_dir / "final"
    saved = tuning.save_final(trainer, str(final_dir))
    if state.is_main_process:
        honour_umask(final_dir)
        # The trainer pickles its arguments beside the weights; the final directory stays pickle-free
        # (config.yaml in the run directory records every setting).
        (final_dir / "training_args.bin").unlink(missing_ok=True)
    after = {}
    if summary_rows and not (trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled):
        policy = trainer.accelerator.unwrap_model(trainer.model)
        after, _ = headline_metrics(policy, tokenizer, data.heldout, summary_rows, max_length, base_scores=base_scores)

    evaluations = [brief(r) for r in evaluation_records(run_dir / "eval")]
    scored = [r for r in evaluations if headline(r)]
    if scored:  # the hook's scores of the starting and the final model are the run's before / after
        before = headline(scored[0]) if scored[0]["step"] == 0 else {}
        after = headline(scored[-1]) if scored[-1]["step"] == trainer.state.global_step else {}
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    result = RunResult(
        run_dir=str(run_dir),
        final_dir=str(final_dir),
        saved=saved,
        recipe=cfg.run_name,
        objective=objective.name,
        tuning=tuning.name,
        model=cfg.model.name_or_path,
        parameters=parameters,
        data={k: data.report[k] for k in ("format", "train_rows", "eval_rows", "skipped_rows")},
        steps=trainer.state.global_step,
        train_loss=losses[-1] if losses else None,
        resumed_from=resume_from,
        before=before,
        after=after,
        evaluations=evaluations,
        seconds=time.time() - started,
    )
    if state.is_main_process:
        write_json(run_dir / "summary.json", result.__dict__)
        print(result.render(), flush=True)
    return result
