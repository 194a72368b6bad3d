"""What an objective is: a thin adapter that configures one TRL trainer.

An objective declares the data formats it trains on, checks its settings and its data up
front (before any model is loaded), and builds its TRL config and trainer. It never looks
at the tuning strategy: the run hands it a model (plain or peft-wrapped) and, when it needs
one, a reference model.
"""

from __future__ import annotations

import dataclasses
from abc import ABC
from typing import Any

from align_train.data import DataBundle
from align_train.errors import ConfigError, DataError
from align_train.inference.logprobs import LogprobHead, install_logprob_head


class Objective(ABC):
    name: str = ""
    accepts: tuple[str, ...] = ()  # data formats the TRL trainer takes (conversions may reach them)
    config_class: type = object  # TRL config dataclass
    trainer_class: type = object  # TRL trainer

    def __init__(self, cfg):
        self.cfg = cfg

    # ----------------------------------------------------------------- checks before loading

    def validate(self, run_cfg) -> None:
        """Config checks that need nothing loaded. ``run_cfg`` is the whole run's config."""

    def check_data(self, data: DataBundle, tokenizer) -> list[str]:
        """Data checks before the model loads; raise DataError, or return warnings to print.

        Conversational data needs a chat template (the tokenizer's, or ``model.chat_template``), and one
        whose assistant turns end with a token the model's generation config stops on.
        """
        from align_train.data.formats import has_conversations
        from align_train.models import chat_template_presets, template_stop_problem

        if not has_conversations(data.train.features):  # the schema: a streamed set is not read here
            return []
        if not tokenizer.chat_template:
            raise DataError(
                "the training data is conversational (lists of messages) but the tokenizer has no chat template (a "
                "base model ships none): set model.chat_template to a preset "
                f"({', '.join(chat_template_presets())}) or a Jinja file, or use standard (plain-string) data"
            )
        problem = template_stop_problem(tokenizer)
        return [f"model.chat_template: {problem}"] if problem else []

    def needs_reference_model(self) -> bool:
        """Whether the trainer must be given a reference model (when the tuning does not provide one)."""
        return False

    def prepare(self, model, tokenizer, data: DataBundle, run_dir) -> DataBundle:
        """Data-dependent state read from the loaded, untouched model before the trainer is built.

        Returns the data the trainer gets (BCO attaches its distribution-matching weights here).
        Called on every process; ``run_dir`` is where it may record what it did (main process).
        """
        return data

    # ----------------------------------------------------------------- building

    def passthrough_kwargs(self) -> dict[str, Any]:
        """The settings the schema declares as TRL's own (``config.trl``), under their names."""
        from omegaconf import OmegaConf

        from align_train.config import OBJECTIVE_SCHEMAS

        values = OmegaConf.to_container(self.cfg, resolve=True) if OmegaConf.is_config(self.cfg) else dict(self.cfg)
        return {f.name: values[f.name] for f in dataclasses.fields(OBJECTIVE_SCHEMAS[self.name])
                if f.metadata.get("trl") and f.name in values}

    def trl_kwargs(self, data: DataBundle) -> dict[str, Any]:
        """The TRL config's objective fields: the pass-through settings, and what this objective derives."""
        return self.passthrough_kwargs()

    def trl_field_names(self) -> set[str]:
        return {f.name for f in dataclasses.fields(self.config_class)}

    def make_args(self, common: dict[str, Any], data: DataBundle):
        kwargs = {**common, **self.trl_kwargs(data)}
        unknown = sorted(set(kwargs) - self.trl_field_names())
        if unknown:
            raise ConfigError(f"{self.config_class.__name__} has no field(s) {unknown}")
        return self.config_class(**kwargs)

    def trainer_init_kwargs(self, data: DataBundle) -> dict[str, Any]:
        """Arguments of this objective's own for its trainer (a custom loss: ``{"loss": ...}``)."""
        return {}

    def build_trainer(self, model, ref_model, tokenizer, data: DataBundle, args, callbacks, **extra):
        """The TRL trainer; ``extra`` comes from the tuning strategy and is passed through untouched."""
        kwargs = dict(
            **self.trainer_init_kwargs(data),
            model=model,
            args=args,
            train_dataset=data.train,
            eval_dataset=data.eval,
            processing_class=tokenizer,
            callbacks=callbacks,
            **extra,
        )
        if ref_model is not None:
            kwargs["ref_model"] = ref_model
        trainer = self.trainer_class_for(args)(**kwargs)
        self.install_logprob_heads(trainer)
        if self.cfg.group_by_length:
            group_by_length(trainer)
        return trainer

    def trainer_class_for(self, args) -> type:
        """The trainer class for these arguments (``args.output_dir`` is the run directory)."""
        return self.trainer_class

    # ----------------------------------------------------------------- reading log-probs

    # The per-token fields the trainer reads from the policy's fused head (TRL's choice for its trainer).
    logprob_outputs: tuple[str, ...] = ("log_probs",)

    def logprob_head(self) -> LogprobHead | None:
        """How the trainer reads log-probs: None keeps TRL's own fused head."""
        if not self.cfg.chunked_logprobs:
            return None
        return LogprobHead(vocab_chunk=self.cfg.logprob_vocab_chunk, padding_free=self.cfg.padding_free)

    def install_logprob_heads(self, trainer) -> None:
        """Policy and reference read their log-probs through ``head`` (chunked, only labelled tokens)."""
        head = self.logprob_head()
        if head is None:
            return
        model = trainer.model
        install_logprob_head(model.get_base_model() if hasattr(model, "get_base_model") else model, head,
                             self.logprob_outputs)
        reference = getattr(trainer, "ref_model", None)
        if reference is not None:  # under DeepSpeed the trainer holds it inside an engine (``.module``)
            install_logprob_head(getattr(reference, "module", reference), head, ("log_probs",))


class ReferenceObjective(Objective):
    """An objective whose loss compares the policy with a frozen reference, scaled by ``beta`` (DPO, KTO)."""

    def validate(self, run_cfg) -> None:
        if self.cfg.beta <= 0:
            raise ConfigError(f"objective.beta must be > 0, got {self.cfg.beta}")

    def needs_reference_model(self) -> bool:
        # Precomputed reference log-probs are taken from the policy before its first step: no copy needed.
        return not self.cfg.precompute_ref_log_probs

    def reference_cache(self, run_dir):
        """Where precomputed reference log-probs are shared between runs (None: computed in each run)."""
        from align_train.objectives.ref_cache import ReferenceCache
        from align_train.run_dir import RunDir

        if not (self.cfg.precompute_ref_log_probs and self.cfg.ref_cache):
            return None
        return ReferenceCache(RunDir(run_dir).ref_cache)

    def trainer_class_for(self, args) -> type:
        from align_train.objectives.ref_cache import with_reference_cache

        cache = self.reference_cache(args.output_dir)
        return self.trainer_class if cache is None else with_reference_cache(self.trainer_class, cache)


def group_by_length(trainer) -> None:
    """Training batches of rows of similar length: transformers' LengthGroupedSampler over the tokenised rows.

    A row's length is that of all its token-id columns together (prompt + chosen + rejected for a pair).
    The trainer drops those columns before it builds its sampler, so the lengths are read here, once.
    """
    from transformers.trainer_pt_utils import LengthGroupedSampler

    dataset = trainer.train_dataset
    columns = [c for c in dataset.column_names if c.endswith("input_ids") or c.endswith("_ids")]
    lengths = [sum(len(row[c]) for c in columns) for row in dataset.select_columns(columns)]
    args = trainer.args

    def sampler(train_dataset=None):
        return LengthGroupedSampler(args.train_batch_size * args.gradient_accumulation_steps, lengths=lengths)

    trainer._get_train_sampler = sampler


def label_counts(data: DataBundle, objective: str, why: str = "") -> tuple[int, int]:
    """(desirable, undesirable) training rows of feedback data; an objective that needs both fails without."""
    labels = data.train["label"]
    n_desirable = sum(labels)
    n_undesirable = len(labels) - n_desirable
    if n_desirable == 0 or n_undesirable == 0:
        raise DataError(
            f"{objective} needs both desirable (label=true) and undesirable (label=false) examples{why}; the training "
            f"set has {n_desirable} desirable and {n_undesirable} undesirable"
        )
    return n_desirable, n_undesirable


def check_choice(key: str, value: Any, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{key} is {value!r}; expected one of {', '.join(map(str, choices))}")
